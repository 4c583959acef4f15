"""The traffic manager's network shells."""
