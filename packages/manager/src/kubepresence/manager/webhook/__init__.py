"""The mutating admission webhook: its certificate, its HTTPS server, its CA bundle."""
