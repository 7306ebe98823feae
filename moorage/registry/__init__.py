"""The registry's domain logic: blobs, uploads, manifests and tags, over storage and metadata."""
