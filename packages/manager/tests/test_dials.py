"""The dial board: post, claim by the right client, time out."""

from __future__ import annotations

import pytest

from kubepresence.manager.core.dials import DialBoard
from kubepresence.protocol.errors import Category, KubepresenceError


def test_claim_by_owner_within_time() -> None:
    board = DialBoard(timeout=5)
    board.post("d1", "alice:orders", "alice", now=100)
    dial = board.claim("d1", "alice", now=104)
    assert (dial.intercept_id, dial.deadline) == ("alice:orders", 105)
    assert len(board) == 0


def test_late_unknown_and_foreign_claims_are_refused() -> None:
    board = DialBoard(timeout=5)
    board.post("d1", "alice:orders", "alice", now=100)
    with pytest.raises(KubepresenceError, match="another session") as foreign:
        board.claim("d1", "bob", now=101)
    assert foreign.value.category is Category.USER
    with pytest.raises(KubepresenceError, match="unknown or timed out"):
        board.claim("d1", "alice", now=106)
    with pytest.raises(KubepresenceError, match="unknown or timed out"):
        board.claim("d1", "alice", now=101)  # the late claim removed it


def test_expiry_withdrawal_and_client_departure() -> None:
    board = DialBoard(timeout=5)
    board.post("d1", "alice:orders", "alice", now=100)
    board.post("d2", "alice:orders", "alice", now=103)
    board.post("d3", "bob:pay", "bob", now=103)
    assert [d.id for d in board.expire(now=106)] == ["d1"]
    assert "d2" in board
    assert board.withdraw("d2") is not None
    assert "d2" not in board
    assert board.withdraw("d2") is None
    assert [d.id for d in board.drop_answerer("bob")] == ["d3"]
    board.post("d4", "x", "c", now=0)
    with pytest.raises(KubepresenceError, match="exists already"):
        board.post("d4", "x", "c", now=0)
