"""Kubernetes admission: pin every image of a workload to a digest, decide which images run."""
