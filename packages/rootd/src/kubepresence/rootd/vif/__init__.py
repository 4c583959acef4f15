"""The VIF: the TUN device, its routes and DNS for one connected session."""
