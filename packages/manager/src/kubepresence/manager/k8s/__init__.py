"""The traffic manager's shells around the Kubernetes API (kubernetes-asyncio)."""
