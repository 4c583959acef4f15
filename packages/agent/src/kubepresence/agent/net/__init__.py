"""The agent's network shells: the takeover listeners, pass-through to the app, HTTP routing,
the redirect init container."""
