"""Metadata backends: the single source of truth for repositories, tags, manifests and uploads."""
