"""kubepresence traffic manager: runs in the cluster, serves clients and agents."""
