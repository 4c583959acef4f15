"""grpclib servicers of the traffic manager: the only place with generated types."""
