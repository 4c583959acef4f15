"""Sans-IO decisions of the root daemon: no sockets, no awaits, no clock."""
