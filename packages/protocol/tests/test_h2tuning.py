"""h2 tuned for bulk data: the cheap frame repr says exactly what hyperframe's says, and
both ends of a real gRPC connection allow large frames."""

from __future__ import annotations

import os
from pathlib import Path

from hyperframe import frame as hyperframe_frame
from hyperframe.frame import DataFrame

from kubepresence.protocol import h2tuning
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.transport import close_server, serve_unix, unix_channel


def test_same_text_as_hyperframe_for_every_length() -> None:
    for length in [*range(40), 16384, 1 << 20]:
        data = os.urandom(length)
        assert h2tuning.raw_data_repr(data) == h2tuning.original_raw_data_repr(data)
    assert h2tuning.raw_data_repr(None) == h2tuning.original_raw_data_repr(None)
    assert hyperframe_frame._raw_data_repr is h2tuning.raw_data_repr  # transport installed it
    assert "<hex:0101010101010101010" in repr(DataFrame(1, data=b"\x01" * 100_000))


class Versions(manager.ManagerBase):
    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        return common.VersionInfo(name="x" * 300_000)  # a message of several frames


async def test_both_ends_allow_large_frames(tmp_path: Path) -> None:
    socket = tmp_path / "versions.socket"
    server = await serve_unix([Versions()], socket)
    channel = unix_channel(socket)
    try:
        answer = await manager.ManagerStub(channel).version(protobuf.Empty(), timeout=5)
        assert len(answer.name) == 300_000
        assert channel._protocol is not None
        h2 = channel._protocol.connection._connection
        assert h2.max_outbound_frame_size == h2tuning.MAX_FRAME  # what the server allows
        assert h2.local_settings.max_frame_size == h2tuning.MAX_FRAME  # what we allow
    finally:
        channel.close()
        await close_server(server)
