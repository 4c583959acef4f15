"""kubepresence traffic agent: the sidecar in intercepted pods."""
