"""grpclib servicers and clients of the user daemon: the only place with generated types."""
