"""Sans-IO decisions of the user daemon: no sockets, no awaits, no clock."""
