"""net.resolving: the record of the resolved link outlives a crash; a gone link is no error."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kubepresence.rootd.net.resolving import LinkRecord, ResolvedLink
from kubepresence.rootd.net.rewriting import process_start_time

GONE_INDEX = 2_000_000_000  # no link has this index


def test_a_record_for_a_link_that_is_gone_is_dropped_without_asking_resolved(
    tmp_path: Path,
) -> None:
    link = ResolvedLink(tmp_path / "state")
    link._save_record(LinkRecord(GONE_INDEX, "kp0", 1, None))
    assert link.has_record()
    assert (link.record_dir.stat().st_mode & 0o777) == 0o700
    # No system bus is asked: there is nothing to revert on a link that does not exist.
    assert link.revert()
    assert not link.has_record()
    assert not link.revert()


def test_the_owner_is_live_only_while_that_very_process_runs(tmp_path: Path) -> None:
    link = ResolvedLink(tmp_path / "state")
    parent = os.getppid()
    link._save_record(LinkRecord(GONE_INDEX, "kp0", parent, process_start_time(parent)))
    assert link.live_owner() == parent
    link._save_record(LinkRecord(GONE_INDEX, "kp0", parent, 12345))  # a reused pid
    assert link.live_owner() is None
    link._save_record(LinkRecord(GONE_INDEX, "kp0", os.getpid(), process_start_time(os.getpid())))
    assert link.live_owner() is None  # our own record is not another session's


def test_an_unreadable_record_is_dropped(tmp_path: Path) -> None:
    link = ResolvedLink(tmp_path / "state")
    link._save_record(LinkRecord(GONE_INDEX, "kp0", 1, None))
    link.record_path.write_text(json.dumps({"index": "x"}))
    assert link.read_record() is None
    assert not link.has_record()
