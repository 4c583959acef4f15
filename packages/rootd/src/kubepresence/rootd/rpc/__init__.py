"""grpclib servicers of the root daemon: the only place with generated types."""
