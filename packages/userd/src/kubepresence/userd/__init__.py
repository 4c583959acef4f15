"""kubepresence user daemon: the workstation's one channel to the cluster."""
