"""Routes that win over a conflicting local route: a table of rootd's own and policy rules.

`--allow-conflicting-subnets` asks rootd to route a cluster subnet through the VIF even
where the machine has a route for (part of) it. Adding the subnet to the main table would
not do: the longest prefix wins there, and the local route may be the longer one. So the
subnet goes into table `TABLE` and a rule `to <subnet> lookup TABLE` at `PRIORITY` (ahead
of the main table's 32766, and of the rules VPNs such as Tailscale add at 5210+) picks it
first. The local route itself is never touched.

The table's routes go with the TUN device. The rules do not, so they are recorded in
rootd's state directory (per network namespace, with the owning rootd's pid and start time)
before they are added, removed on disconnect, and removed by `recover` (the guardian, or
the next rootd's start-up) when the rootd that added them died. Blocking (runs `ip`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kubepresence.rootd.net.rewriting import namespace_key, process_start_time

log = logging.getLogger(__name__)

TABLE = 27504  # 0x6b70, "kp"
PRIORITY = 1000
_STATE_NAME = "policy-rules.json"
_IP_TIMEOUT = 10.0


class PolicyRoutingError(OSError):
    """A rule or route could not be added."""


def _ip(*args: str, check: bool = True) -> None:
    command = ["ip", *args]
    try:
        subprocess.run(command, check=check, capture_output=True, timeout=_IP_TIMEOUT, text=True)
    except subprocess.CalledProcessError as error:
        raise PolicyRoutingError(
            0, f"{' '.join(command)}: {error.stderr.strip() or error.returncode}"
        ) from None
    except (OSError, subprocess.SubprocessError) as error:
        raise PolicyRoutingError(0, f"{' '.join(command)}: {error}") from None


def _family(subnet: str) -> str:
    return "-6" if ":" in subnet else "-4"


class PolicyRoutes:
    """The policy rules and table routes of one session."""

    def __init__(self, state_dir: Path) -> None:
        self.state = state_dir / namespace_key() / _STATE_NAME
        self.subnets: list[str] = []

    def add(self, device: str, subnets: Sequence[str]) -> None:
        """Route `subnets` through `device` ahead of the main table. On failure the caller
        calls `remove` (registered before this), which undoes what was added."""
        self.subnets = list(subnets)
        self._record()
        for subnet in subnets:
            _ip(_family(subnet), "route", "replace", subnet, "dev", device, "table", str(TABLE))
            _ip(
                _family(subnet), "rule", "add", "to", subnet,
                "lookup", str(TABLE), "priority", str(PRIORITY),
            )  # fmt: skip
        log.info("policy rules for %s (table %d)", " ".join(subnets), TABLE)

    def remove(self) -> None:
        """Delete the rules and table routes; forget the record. Quiet about what is gone."""
        if not self.subnets and not self.state.exists():
            return
        _delete_rules(self.subnets)
        with contextlib.suppress(FileNotFoundError):
            self.state.unlink()
        if self.subnets:
            log.info("removed the policy rules for %s", " ".join(self.subnets))
        self.subnets = []

    def _record(self) -> None:
        record = {
            "pid": os.getpid(),
            "start": process_start_time(os.getpid()),
            "subnets": self.subnets,
        }
        self.state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.state.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(self.state)


def _delete_rules(subnets: Sequence[str]) -> None:
    for subnet in subnets:
        family = _family(subnet)
        with contextlib.suppress(PolicyRoutingError):
            _ip(
                family, "rule", "del", "to", subnet, "lookup", str(TABLE), "priority", str(PRIORITY)
            )
        with contextlib.suppress(PolicyRoutingError):
            _ip(family, "route", "del", subnet, "table", str(TABLE))


def recover(state_dir: Path, dead: int | None = None) -> bool:
    """Remove the rules a dead rootd left in this namespace; False if there were none (or
    their rootd still runs)."""
    state = state_dir / namespace_key() / _STATE_NAME
    try:
        record = json.loads(state.read_text())
        pid, start, subnets = int(record["pid"]), record["start"], list(record["subnets"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("unreadable %s (%s): removed", state, error)
        state.unlink(missing_ok=True)
        return False
    alive = pid != dead and pid != os.getpid() and process_start_time(pid) == start
    if alive and start is not None:
        log.warning("rootd pid %d owns the policy rules in this namespace; leaving them", pid)
        return False
    log.warning("a previous run left policy rules for %s: removing them", " ".join(subnets))
    _delete_rules([str(s) for s in subnets])
    state.unlink(missing_ok=True)
    return True
