"""A cheaper repr of HTTP/2 frame data, for every gRPC connection of every part.

h2 4.x logs each frame it receives as `logger.trace("Received frame: %s", repr(frame))`:
the repr is built even when nothing logs it, and hyperframe's repr of a DATA frame
hexlifies the *whole* payload only to keep its first 20 hex digits. On the tunnel's
bulk path that was 11-26 % of the CPU time of userd, the manager and the agent
(benchmarks' py-spy profile, issue 8). `install` swaps in a function that gives the same
text from the first 11 bytes. hyperframe is pinned (constraints.txt); the unit test
checks the text stays identical to the original's.
"""

from __future__ import annotations

import binascii

from hyperframe import frame

_ORIGINAL = frame._raw_data_repr
_SHOWN = 20  # hex digits hyperframe keeps


def raw_data_repr(data: bytes | None) -> str:
    if not data:
        return "None"
    shown = binascii.hexlify(data[: _SHOWN // 2 + 1]).decode("ascii")
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + "..."
    return "<hex:" + shown + ">"


def install() -> None:
    frame._raw_data_repr = raw_data_repr


def original(data: bytes | None) -> str:
    """hyperframe's own function, for the test that the two agree."""
    return _ORIGINAL(data)
