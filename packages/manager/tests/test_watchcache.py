"""The sans-IO watch cache: lists, events, bookmarks, 410 Gone, relist diffs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.manager.core.watchcache import (
    Change,
    ChangeType,
    Step,
    WatchCache,
    WatchExpiredError,
    WatchFailedError,
    WatchProtocolError,
    key_of,
)


def pod(name: str, rv: str, ns: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv, **extra}}


def listing(rv: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv}, "items": list(items)}


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def types(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.type.value, c.key[1]) for c in changes]


def test_a_new_cache_lists_first_then_watches_from_the_list_version() -> None:
    cache = WatchCache()
    assert (cache.next_step(), cache.synced, cache.resource_version) == (Step.LIST, False, "")
    changes = cache.listed(listing("100", pod("a", "90"), pod("b", "95")))
    assert types(changes) == [("ADDED", "a"), ("ADDED", "b")]
    assert (cache.next_step(), cache.synced, cache.resource_version) == (Step.WATCH, True, "100")
    assert len(cache) == 2
    assert cache.get(("shop", "a")) == pod("a", "90")


def test_events_apply_and_track_the_version() -> None:
    cache = WatchCache()
    cache.listed(listing("100", pod("a", "90")))
    assert types(cache.event(event("ADDED", pod("b", "101")))) == [("ADDED", "b")]
    assert cache.resource_version == "101"
    [changed] = cache.event(event("MODIFIED", pod("a", "102", labels={"x": "y"})))
    assert (changed.type, changed.old, changed.new) == (
        ChangeType.MODIFIED,
        pod("a", "90"),
        pod("a", "102", labels={"x": "y"}),
    )
    [deleted] = cache.event(event("DELETED", pod("b", "103")))
    # A DELETED change carries the object's final state as `old`.
    assert (deleted.type, deleted.old, deleted.new) == (ChangeType.DELETED, pod("b", "103"), None)
    assert deleted.object == pod("b", "103")
    assert cache.resource_version == "103"
    assert [key_of(o) for o in cache] == [("shop", "a")]


def test_a_modified_event_for_an_unknown_object_adds_it() -> None:
    cache = WatchCache()
    cache.listed(listing("1"))
    assert types(cache.event(event("MODIFIED", pod("a", "2")))) == [("ADDED", "a")]


def test_a_deleted_event_for_an_unknown_object_changes_nothing_but_the_version() -> None:
    cache = WatchCache()
    cache.listed(listing("1"))
    assert cache.event(event("DELETED", pod("a", "5"))) == []
    assert cache.resource_version == "5"


def test_bookmarks_only_move_the_version() -> None:
    cache = WatchCache()
    cache.listed(listing("1", pod("a", "1")))
    assert cache.event(event("BOOKMARK", {"metadata": {"resourceVersion": "500"}})) == []
    assert (cache.resource_version, len(cache)) == ("500", 1)
    with pytest.raises(WatchProtocolError, match="BOOKMARK"):
        cache.event(event("BOOKMARK", {"metadata": {}}))


def test_the_stream_ending_keeps_cache_and_version_so_the_next_step_rewatches() -> None:
    cache = WatchCache()
    cache.listed(listing("1"))
    cache.event(event("ADDED", pod("a", "7")))
    # (nothing to call: the shell simply asks again)
    assert (cache.next_step(), cache.resource_version) == (Step.WATCH, "7")


def test_410_gone_as_an_error_event_forgets_the_version_and_relists() -> None:
    cache = WatchCache()
    cache.listed(listing("1", pod("a", "1")))
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old: 1"}
    with pytest.raises(WatchExpiredError, match="too old"):
        cache.event(event("ERROR", gone))
    assert (cache.next_step(), cache.resource_version, len(cache)) == (Step.LIST, "", 1)


def test_410_as_an_http_status_is_told_by_the_shell() -> None:
    cache = WatchCache()
    cache.listed(listing("1"))
    cache.expired()
    assert cache.next_step() is Step.LIST


def test_other_error_events_keep_the_version() -> None:
    cache = WatchCache()
    cache.listed(listing("1"))
    with pytest.raises(WatchFailedError) as failed:
        cache.event(event("ERROR", {"code": 500, "message": "etcd is sad"}))
    assert failed.value.code == 500
    assert "etcd is sad" in str(failed.value)
    assert cache.next_step() is Step.WATCH
    with pytest.raises(WatchFailedError) as failed:
        cache.event(event("ERROR", {"reason": "odd"}))
    assert failed.value.code == 0


def test_a_relist_reports_what_changed_while_unwatched() -> None:
    cache = WatchCache()
    cache.listed(listing("10", pod("stays", "1"), pod("changes", "2"), pod("goes", "3")))
    changes = cache.listed(listing("20", pod("stays", "1"), pod("changes", "15"), pod("new", "16")))
    assert sorted(types(changes)) == [
        ("ADDED", "new"),
        ("DELETED", "goes"),
        ("MODIFIED", "changes"),
    ]
    deleted = next(c for c in changes if c.type is ChangeType.DELETED)
    assert deleted.old == pod("goes", "3")
    assert sorted(k for _, k in (key_of(o) for o in cache)) == ["changes", "new", "stays"]
    assert cache.resource_version == "20"


def test_keep_filters_what_is_cached() -> None:
    def keep(obj: Any) -> bool:
        return bool(obj["metadata"].get("labels", {}).get("agent"))

    cache = WatchCache(keep)
    cache.listed(listing("1", pod("plain", "1"), pod("agent", "1", labels={"agent": "y"})))
    assert [key_of(o)[1] for o in cache] == ["agent"]
    # Not kept: no change, no entry; but its version still counts.
    assert cache.event(event("ADDED", pod("other", "2"))) == []
    assert cache.resource_version == "2"
    assert cache.event(event("DELETED", pod("other", "3"))) == []
    # A kept object that stops passing the predicate leaves, as it was last kept.
    [left] = cache.event(event("MODIFIED", pod("agent", "4")))
    assert (left.type, left.old, left.new) == (
        ChangeType.DELETED,
        pod("agent", "1", labels={"agent": "y"}),
        None,
    )
    assert len(cache) == 0


def test_cluster_scoped_objects_have_an_empty_namespace() -> None:
    cache = WatchCache()
    cache.listed(listing("1", {"metadata": {"name": "node-1", "resourceVersion": "1"}}))
    assert cache.get(("", "node-1")) is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"metadata": {"resourceVersion": "1"}}, "without items"),
        ({"items": []}, "without a resourceVersion"),
        ({"metadata": {"resourceVersion": "1"}, "items": [{"metadata": {}}]}, "metadata.name"),
    ],
)
def test_malformed_lists_are_refused(body: dict[str, Any], message: str) -> None:
    cache = WatchCache()
    with pytest.raises(WatchProtocolError, match=message):
        cache.listed(body)
    assert (cache.synced, cache.next_step()) == (False, Step.LIST)


@pytest.mark.parametrize(
    ("ev", "message"),
    [
        ({"type": "ADDED"}, "without an object"),
        ({"type": "ADDED", "object": "x"}, "without an object"),
        ({"type": "SOMETHING", "object": {"metadata": {"name": "a"}}}, "unknown type"),
        ({"type": "ADDED", "object": {"metadata": "x"}}, "metadata.name"),
    ],
)
def test_malformed_events_are_refused(ev: dict[str, Any], message: str) -> None:
    cache = WatchCache()
    cache.listed(listing("1"))
    with pytest.raises(WatchProtocolError, match=message):
        cache.event(ev)
    assert cache.resource_version == "1"


# A model check: any sequence of events, then a relist of the "truth", leaves the cache
# equal to the truth, and the changes of the relist turn the old content into the new.
_names = st.sampled_from(["a", "b", "c", "d"])
_ops = st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), _names), max_size=30)


@given(before=_ops, truth=st.sets(_names))
def test_a_relist_converges_on_the_listed_truth(
    before: list[tuple[str, str]], truth: set[str]
) -> None:
    cache = WatchCache()
    cache.listed(listing("1"))
    expected: dict[str, dict[str, Any]] = {}
    for rv, (kind, name) in enumerate(before, start=2):
        obj = pod(name, str(rv))
        cache.event(event(kind, obj))
        if kind == "DELETED":
            expected.pop(name, None)
        else:
            expected[name] = obj
        assert {key_of(o)[1]: o for o in cache} == expected
        assert cache.resource_version == str(rv)
    listed = {name: pod(name, "999") for name in truth}
    changes = cache.listed(listing("1000", *listed.values()))
    assert {key_of(o)[1]: o for o in cache} == listed
    replayed = dict(expected)
    for change in changes:
        if change.type is ChangeType.DELETED:
            assert change.old == replayed.pop(change.key[1])
        else:
            assert change.old == replayed.get(change.key[1])
            assert change.new is not None
            replayed[change.key[1]] = dict(change.new)
    assert replayed == listed
