"""A restartable Kubernetes watch, without the I/O: a cache of one kind of object.

Theory of operation. A watch is a list followed by a stream of events. The list gives
every object and a resourceVersion; a watch from that version sends what changed after
it (ADDED, MODIFIED, DELETED), and, because the shell asks for bookmarks, BOOKMARK events
that only move the version forward. Every event's object carries the version it was
written at, so the cache always knows the newest version it has seen and can resume
there.

| what happened                                  | the cache                   | next step   |
|------------------------------------------------|-----------------------------|-------------|
| nothing yet                                    | empty, no version           | LIST        |
| a list                                         | replaced; the difference to | WATCH from  |
|                                                |   the old content is        |   the list's|
|                                                |   reported as changes       |   version   |
| ADDED / MODIFIED / DELETED                     | applied, version tracked    | (reading)   |
| BOOKMARK                                       | version tracked             | (reading)   |
| the stream ended (the server's timeout)        | kept                        | WATCH from  |
|                                                |                             |   the last  |
| ERROR event or HTTP status 410 Gone            | kept, version forgotten     | LIST        |
|   (the version is older than etcd still has)  |                             |             |
| any other failure (network, 5xx, 403 …)        | kept, version kept          | BACKOFF,    |
|                                                |                             |   then WATCH|
|                                                |                             |   (or LIST) |

A relist after 410 may have missed deletions: the list replaces the cache, and objects
that were cached but are not listed come out as DELETED changes, so consumers never keep
a ghost. Objects that do not pass the `keep` predicate are not cached (and a kept object
that stops passing it is reported deleted).

Between failures the shell waits as `kubepresence.protocol.backoff.Backoff` says; any
event or list starts it over, and a long outage logs once.

Plain data (the JSON objects as dicts) and decisions: no clock, no sockets. The shell
(`k8s/watching.py`) does the requests and the sleeping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (namespace or "", name)
Object = Mapping[str, Any]

GONE = 410


class Step(enum.Enum):
    LIST = "list"
    WATCH = "watch"


class ChangeType(enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class Change:
    type: ChangeType
    key: Key
    old: Object | None  # None for ADDED; for DELETED, the object's last state
    new: Object | None  # None for DELETED

    @property
    def object(self) -> Object:
        """The object as it is now (or as it was last, when deleted)."""
        found = self.new if self.new is not None else self.old
        assert found is not None
        return found


class WatchProtocolError(Exception):
    """The API server sent something a watch cannot be made of (the shell backs off)."""


class WatchExpiredError(Exception):
    """The watch's version is too old (410 Gone): the shell lists again."""


class WatchFailedError(Exception):
    """An ERROR event other than 410: the shell backs off and watches again."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def key_of(obj: Object) -> Key:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise WatchProtocolError("an object without metadata.name")
    return str(meta.get("namespace") or ""), str(meta["name"])


def version_of(obj: Object) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        return str(meta.get("resourceVersion") or "")
    return ""


class WatchCache:
    """One kind of object as the API server last told it; see the module docstring."""

    def __init__(self, keep: Callable[[Object], bool] = lambda _obj: True) -> None:
        self._keep = keep
        self._objects: dict[Key, Object] = {}
        self.resource_version = ""  # "": none known, list first
        self.synced = False  # a list has been applied at least once

    # --- decisions ------------------------------------------------------------------

    def next_step(self) -> Step:
        return Step.WATCH if self.resource_version else Step.LIST

    # --- inputs ---------------------------------------------------------------------

    def listed(self, body: Object) -> list[Change]:
        """Apply a list response (`{"metadata": {"resourceVersion"}, "items": [...]}`)."""
        items = body.get("items")
        if not isinstance(items, list):
            raise WatchProtocolError("a list response without items")
        version = version_of(body)
        if not version:
            raise WatchProtocolError("a list response without a resourceVersion")
        fresh: dict[Key, Object] = {}
        for item in items:
            if self._keep(item):
                fresh[key_of(item)] = item
        changes = []
        for key, old in self._objects.items():
            if key not in fresh:
                changes.append(Change(ChangeType.DELETED, key, old, None))
        for key, new in fresh.items():
            before = self._objects.get(key)
            if before is None:
                changes.append(Change(ChangeType.ADDED, key, None, new))
            elif before != new:
                changes.append(Change(ChangeType.MODIFIED, key, before, new))
        self._objects = fresh
        self.resource_version = version
        self.synced = True
        return changes

    def event(self, event: Object) -> list[Change]:
        """Apply one watch event; raises WatchExpiredError / WatchFailedError on ERROR."""
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            raise WatchProtocolError(f"a {kind} event without an object")
        if kind == "ERROR":
            code = obj.get("code")
            message = str(obj.get("message") or obj.get("reason") or "no message")
            if code == GONE:
                self.expired()
                raise WatchExpiredError(message)
            raise WatchFailedError(code if isinstance(code, int) else 0, message)
        version = version_of(obj)
        if kind == "BOOKMARK":
            if not version:
                raise WatchProtocolError("a BOOKMARK without a resourceVersion")
            self.resource_version = version
            return []
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise WatchProtocolError(f"an event of unknown type {kind!r}")
        key = key_of(obj)
        if version:
            self.resource_version = version
        old = self._objects.get(key)
        if kind == "DELETED" or not self._keep(obj):
            if old is None:
                return []
            del self._objects[key]
            # A DELETED event carries the object's last state; a kept object that stops
            # passing `keep` leaves as it was last kept.
            return [Change(ChangeType.DELETED, key, obj if kind == "DELETED" else old, None)]
        self._objects[key] = obj
        if old is None:
            return [Change(ChangeType.ADDED, key, None, obj)]
        return [Change(ChangeType.MODIFIED, key, old, obj)]

    def expired(self) -> None:
        """410 Gone: the version is too old to watch from; the next step is a list."""
        self.resource_version = ""

    # --- reading --------------------------------------------------------------------

    def get(self, key: Key) -> Object | None:
        return self._objects.get(key)

    def __iter__(self) -> Iterator[Object]:
        return iter(list(self._objects.values()))

    def __len__(self) -> int:
        return len(self._objects)
