"""The cheap frame-data repr says exactly what hyperframe's own says."""

from __future__ import annotations

import os

from hyperframe.frame import DataFrame

from kubepresence.protocol import framerepr, transport


def test_same_text_as_hyperframe_for_every_length() -> None:
    for length in [*range(40), 16384, 1 << 20]:
        data = os.urandom(length)
        assert framerepr.raw_data_repr(data) == framerepr.original(data)
    assert framerepr.raw_data_repr(None) == framerepr.original(None)


def test_installed_for_every_grpc_user() -> None:
    assert transport.CONFIGURATION is not None  # importing transport installs it
    frame = DataFrame(1, data=b"\x01" * 100_000)
    assert "<hex:0101010101010101010" in repr(frame)
    from hyperframe import frame as module

    assert module._raw_data_repr is framerepr.raw_data_repr
