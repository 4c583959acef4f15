"""I/O shells of the root daemon's network path: the TUN device and the loop around the endpoint."""
