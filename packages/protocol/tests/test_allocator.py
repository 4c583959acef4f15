"""The allocator settings apply on this machine's C library (glibc on every target)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from kubepresence.protocol.allocator import tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc (mallopt)")
def test_glibc_takes_the_thresholds() -> None:
    assert ctypes.util.find_library("c")
    assert tune_allocator() is True
