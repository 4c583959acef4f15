"""The user daemon's shells around the Kubernetes API (kubernetes-asyncio)."""
