"""kubepresence command line: the friendly face of the user daemon."""
