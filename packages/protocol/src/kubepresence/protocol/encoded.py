"""A protobuf message passed along still encoded.

grpclib's codec turns bytes into a message with `FromString` and back with
`SerializeToString`. `EncodedMessage` answers both without parsing, so a part that only
relays messages between two streams (userd between rootd and the manager) skips the
decode and the encode of every payload message: two copies and the parser's work each.
"""

from __future__ import annotations


class EncodedMessage:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def FromString(cls, data: bytes) -> EncodedMessage:  # noqa: N802 - grpclib's codec API
        return cls(data)

    def SerializeToString(self) -> bytes:  # noqa: N802 - grpclib's codec API
        return self.data
