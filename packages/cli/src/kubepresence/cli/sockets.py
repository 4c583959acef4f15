"""Whether a local daemon listens on its socket: a plain connect, no gRPC (commands ask
before they load the gRPC stack, and `version` or `status` without daemons never do)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from kubepresence.protocol.paths import json_calls_socket


def socket_is_live(path: Path, *, remove_stale: bool = True) -> bool:
    """Whether a daemon listens on this socket (it may still be too busy or frozen to
    answer: the call finds out). The file of a killed daemon refuses connections: it is
    removed, with its JSON calls' socket beside it, and nothing is running there. Not while
    a daemon we started comes up (`remove_stale=False`): between its bind and its listen
    the socket refuses too."""
    live = _accepts(path, remove_stale=remove_stale)
    if not live and remove_stale:
        _accepts(json_calls_socket(path), remove_stale=True)
    return live


def _accepts(path: Path, *, remove_stale: bool) -> bool:
    if not path.is_socket():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except ConnectionRefusedError:
        if remove_stale:
            with contextlib.suppress(OSError):
                path.unlink()
        return False
    except OSError:
        return True  # there, but not for us to judge (a full backlog, permissions)
    finally:
        probe.close()
    return True
