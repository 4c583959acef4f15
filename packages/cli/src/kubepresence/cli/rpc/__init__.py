"""Clients of the daemons: the only place of the CLI that sees generated types."""
