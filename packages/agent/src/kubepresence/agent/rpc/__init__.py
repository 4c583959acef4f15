"""The agent's calls to the traffic manager: the only place that sees generated types."""
