"""kubepresence root daemon: the VIF (TUN device), routes and cluster DNS."""
