"""Sans-IO decisions of the traffic manager: no sockets, no awaits, no clock."""
