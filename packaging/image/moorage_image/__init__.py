"""Builds moorage's container image, reproducibly, as an OCI image layout (see build.py)."""
