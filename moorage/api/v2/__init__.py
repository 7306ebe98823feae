"""Handlers for the OCI Distribution API under /v2/."""
