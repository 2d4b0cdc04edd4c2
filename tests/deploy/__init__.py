"""Checks of deploy/: the image (built and run with podman), the compose stack and the
Kubernetes manifests (validated against their schemas)."""
