"""Whose fault it was: the errors of the root daemon's sans-IO network core.

Two kinds, kept apart as h11 does: a `LocalProtocolError` means our own code (the shell or
the relay that owns a connection) asked for something the protocol does not allow, which is
a bug to fix here; a `RemoteProtocolError` means a packet from the peer broke the rules,
which is expected traffic to drop and count, never a crash.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the network core raises on purpose."""


class LocalProtocolError(ProtocolError):
    """The owner of a connection broke the protocol (e.g. `send` after `close`)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol (e.g. a truncated or self-contradicting packet)."""
