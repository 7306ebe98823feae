"""Bytes-only storage drivers. They know keys and bytes, nothing about OCI."""
