"""Deployments other than launch.py: Kubernetes manifests."""
