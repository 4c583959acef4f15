"""Sans-IO parts of the traffic agent: its configuration, redirects, routing decisions."""
