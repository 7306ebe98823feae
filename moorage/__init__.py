"""moorage: an OCI registry for Kubernetes that pins every image to a digest."""

__version__ = "0.1.0"
