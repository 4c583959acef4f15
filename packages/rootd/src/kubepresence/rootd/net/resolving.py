"""systemd-resolved's settings for the TUN link, over D-Bus, with a record that outlives a crash.

D-Bus client: jeepney (pure Python, no C extension, used by keyring and SecretStorage; the
one well-kept client with a blocking API as well as asyncio). Blocking is what this needs:
the undo steps run synchronously so they finish while the session's task is cancelled, and
the guardian recovers in a plain process with no event loop (dbus-fast is asyncio only;
busctl would mean parsing its text and a process per call). rootd calls it in a thread.

Before rootd sets anything on the link it records, under its state directory (per network
namespace, as `rewriting` keeps resolv.conf's backup), which link it configures (index and
name) and which rootd did it (pid and start time). `revert` calls RevertLink and drops the
record; the next rootd and the guardian do the same for a record a dead rootd left. The
link usually vanished with the dead rootd's TUN, and resolved forgot its settings with it:
a link index that no longer names that device is left alone (the index may be another
device's by now), quietly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jeepney import DBusAddress, DBusErrorResponse, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

from kubepresence.rootd.core.resolved import LinkSettings, ResolverMethod, choose_method
from kubepresence.rootd.net.rewriting import namespace_key, process_start_time

log = logging.getLogger(__name__)

RESOLVE1 = "org.freedesktop.resolve1"
_MANAGER = DBusAddress(
    "/org/freedesktop/resolve1", bus_name=RESOLVE1, interface=f"{RESOLVE1}.Manager"
)
_RECORD_NAME = "resolved-link.json"
CALL_TIMEOUT = 5.0  # resolved answers at once; a hung one must not hang rootd's undo
_NO_SUCH_LINK = f"{RESOLVE1}.NoSuchLink"


class ResolvedError(OSError):
    """resolved could not be reached or refused a call (`dbus_error`: its error name)."""

    def __init__(self, message: str, dbus_error: str = "") -> None:
        super().__init__(message)
        self.dbus_error = dbus_error


@contextlib.contextmanager
def _system_bus() -> Iterator[DBusConnection]:
    try:
        connection = open_dbus_connection(bus="SYSTEM")
    except (OSError, ValueError) as error:  # no bus socket; or its address is unreadable
        raise ResolvedError(f"cannot connect to the system D-Bus: {error}") from None
    try:
        yield connection
    finally:
        connection.close()


def _call(connection: DBusConnection, member: str, signature: str, *body: Any) -> tuple[Any, ...]:
    message = new_method_call(_MANAGER, member, signature, body)
    try:
        reply = connection.send_and_get_reply(message, timeout=CALL_TIMEOUT)
    except (OSError, TimeoutError) as error:
        raise ResolvedError(f"resolved: {member} failed: {error!r}") from None
    if reply.header.message_type == MessageType.error:
        refusal = DBusErrorResponse(reply)
        raise ResolvedError(
            f"resolved refused {member}: {refusal.name} {refusal.data}", refusal.name
        )
    result: tuple[Any, ...] = reply.body
    return result


def resolved_on_bus() -> bool:
    """Whether systemd-resolved owns its name on the system bus and serves this network
    namespace (False: no bus, no resolved, or a resolved of another namespace, whose link
    indexes are not ours: a rootd in a scratch namespace reaches the host's bus too)."""
    try:
        with _system_bus() as connection:
            owned = connection.send_and_get_reply(
                message_bus.NameHasOwner(RESOLVE1), timeout=CALL_TIMEOUT
            )
            if owned.header.message_type != MessageType.method_return or not owned.body[0]:
                return False
            owner = connection.send_and_get_reply(
                message_bus.GetConnectionUnixProcessID(RESOLVE1), timeout=CALL_TIMEOUT
            )
    except (ResolvedError, OSError, TimeoutError) as error:
        log.debug("no systemd-resolved on the system bus: %s", error)
        return False
    if owner.header.message_type != MessageType.method_return:
        return True  # the bus does not tell: trust that it is this machine's resolved
    try:
        theirs = Path(f"/proc/{int(owner.body[0])}/ns/net").stat().st_ino
        ours = Path("/proc/self/ns/net").stat().st_ino
    except OSError:
        return True  # another pid namespace (a container): cannot tell, trust the bus
    if theirs != ours:
        log.info("systemd-resolved (pid %s) serves another network namespace", owner.body[0])
    return theirs == ours


def detect_method(resolv_conf: Path) -> ResolverMethod:
    """How to point this machine's resolver at the cluster (`core.resolved.choose_method`)."""
    try:
        text = resolv_conf.read_text(errors="replace")
    except OSError:
        text = ""
    return choose_method(resolved_on_bus(), text)


@dataclass(frozen=True, slots=True)
class LinkRecord:
    index: int
    name: str
    pid: int
    start: int | None


class ResolvedLink:
    """The TUN link's resolved settings in this network namespace, and their record."""

    def __init__(self, state_dir: Path) -> None:
        self.record_dir = state_dir / namespace_key()
        self.record_path = self.record_dir / _RECORD_NAME

    def has_record(self) -> bool:
        return self.record_path.exists()

    def read_record(self) -> LinkRecord | None:
        try:
            raw = json.loads(self.record_path.read_bytes())
            return LinkRecord(int(raw["index"]), str(raw["name"]), int(raw["pid"]), raw["start"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("unreadable record %s (dropped): %s", self.record_path, error)
            self.record_path.unlink(missing_ok=True)
            return None

    def live_owner(self) -> int | None:
        """The pid of the (other) running rootd that configured the link, or None."""
        record = self.read_record()
        if record is None or record.pid == os.getpid() or record.start is None:
            return None
        return record.pid if process_start_time(record.pid) == record.start else None

    def configure(self, name: str, settings: LinkSettings) -> None:
        """Record the link, then set DNS, domains and default route on it (ResolvedError when
        resolved cannot be asked or refuses; the record stays for `revert`)."""
        index = socket.if_nametoindex(name)
        self._save_record(LinkRecord(index, name, os.getpid(), process_start_time(os.getpid())))
        with _system_bus() as connection:
            _call(connection, "SetLinkDNS", "ia(iay)", index, list(settings.dns))
            _call(connection, "SetLinkDomains", "ia(sb)", index, list(settings.domains))
            _call(connection, "SetLinkDefaultRoute", "ib", index, settings.default_route)
        log.info("resolved: link %s (%d) configured", name, index)

    def revert(self) -> bool:
        """RevertLink on the recorded link and drop the record; False if there was none.

        A link that is gone (or whose index names another device now) needs nothing: resolved
        dropped its settings with it. ResolvedError when resolved cannot be asked: the record
        stays, for the next try."""
        record = self.read_record()
        if record is None:
            return False
        try:
            current = socket.if_indextoname(record.index)
        except OSError:
            current = None
        if current == record.name:
            with _system_bus() as connection:
                try:
                    _call(connection, "RevertLink", "i", record.index)
                except ResolvedError as error:
                    if error.dbus_error != _NO_SUCH_LINK:  # gone meanwhile: nothing to do
                        raise
            log.info("resolved: link %s (%d) reverted", record.name, record.index)
        else:
            log.info("resolved: link %s (%d) is gone, nothing to revert", record.name, record.index)
        self.record_path.unlink(missing_ok=True)
        return True

    def _save_record(self, record: LinkRecord) -> None:
        self.record_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.record_dir.mkdir(mode=0o700, exist_ok=True)
        temporary = self.record_path.with_suffix(".tmp")
        content = {"index": record.index, "name": record.name, "pid": record.pid}
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, json.dumps({**content, "start": record.start}).encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        temporary.replace(self.record_path)
