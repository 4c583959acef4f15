"""The user daemon's connection state machine."""

from __future__ import annotations

import pytest

from kubepresence.protocol.errors import Category, KubepresenceError
from kubepresence.userd.core.session import Phase, SessionState


def test_connect_then_disconnect() -> None:
    state = SessionState()
    state.begin_connect("lab", "default")
    assert state.phase is Phase.CONNECTING
    state.connected("s-1")
    assert (state.phase, state.session_id) == (Phase.CONNECTED, "s-1")
    state.disconnected()
    assert (state.phase, state.context, state.session_id) == (Phase.DISCONNECTED, "", "")


def test_second_connect_to_another_context_is_a_user_error() -> None:
    state = SessionState()
    state.begin_connect("lab", "default")
    state.connected("s-1")
    with pytest.raises(KubepresenceError, match="run 'kubepresence quit' first") as caught:
        state.begin_connect("prod", "default")
    assert caught.value.category is Category.USER
    assert state.context == "lab"


def test_connected_without_connecting_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        SessionState().connected("s-1")
