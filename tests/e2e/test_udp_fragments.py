"""Large UDP datagrams through the VIF, and the log level of the local daemons.

Scenarios (one `kubepresence connect --mapped-namespaces <ns>` for the module, in ws1):
- datagrams of 1, 1472, 1473, 8192, 26000, 65000 and 65507 bytes sent from the workstation
  to the UDP echo Service come back byte-exact: above 1472 bytes the workstation's kernel
  fragments them on kp0 (MTU 1500), rootd reassembles them, and rootd fragments the echo
  pod's equally large answer back; rootd logs no fragment drop;
- `kubepresence loglevel debug -l` reaches both local daemons (userd and rootd write debug
  lines afterwards), `loglevel info` turns it back, `-d SECONDS` reverts by itself, and
  `-r` (the traffic manager and agents) is refused in one line because their protocol has
  no way to set a level at run time;
- a flood of malformed packets written into kp0 (fragment floods with random ids and
  offsets, truncated headers, bad lengths and checksums, odd header lengths and TCP flags)
  leaves rootd running with its memory bounded, still echoing 65507-byte datagrams, and its
  fragment drops logged at most once per 10 s.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster, EchoWorkload
from workstation_cli import Workstation, uninstall_manager, ws1_vif_lock
from workstation_servers import PROGRAMS

SIZES = (1, 1472, 1473, 8192, 26000, 65000, 65507)

UDP_SIZES_CLIENT = (PROGRAMS / "udp_sizes_client.py").read_text()


@dataclass
class Connected:
    ws: Workstation
    namespace: str
    udp: EchoWorkload


@pytest.fixture(scope="module")
def connected(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connected]:
    manager_namespace = f"kp-mgr-{secrets.token_hex(3)}"
    with ws1_vif_lock(), cluster.namespace("udpfrag") as namespace:
        udp = cluster.deploy_echo("udp", namespace)
        ws = Workstation(cluster, tmp_path_factory.mktemp("udpfrag-home"))
        try:
            result = ws.kp(
                "connect",
                "--manager-namespace",
                manager_namespace,
                "--mapped-namespaces",
                namespace,
            )
            assert result.returncode == 0, result.stderr + ws.logs()
            yield Connected(ws, namespace, udp)
        finally:
            ws.kp("quit", timeout=60)
            uninstall_manager(cluster, manager_namespace)


def test_datagrams_up_to_65507_bytes_come_back_byte_exact(connected: Connected) -> None:
    ws = connected.ws
    answer = ws.python(
        UDP_SIZES_CLIENT,
        f"udp-echo.{connected.namespace}",
        str(connected.udp.service_port),
        ",".join(str(size) for size in SIZES),
    )
    print("UDP echo round trips:", json.dumps(answer["results"]))
    assert answer["address"] == connected.udp.service_ip
    failed = {size: r for size, r in answer["results"].items() if not r["ok"]}
    assert not failed, f"{failed}\n{ws.logs()}"
    assert "IP fragment(s)" not in ws.log("rootd"), ws.logs()  # no drop warning

    # status shows what reassembly did (userd asks rootd every second).
    def counted() -> dict[str, Any] | None:
        fragments: dict[str, Any] = ws.status()["connection"]["ip_fragments"]  # type: ignore[index]
        return fragments if fragments["reassembled"] > 0 else None

    fragments = wait_for("status to show the reassembly", counted, timeout=10)
    large = [size for size in SIZES if size > 1472]
    assert fragments["received"] >= 2 * len(large), fragments
    assert fragments["reassembled"] >= len(large), fragments
    assert fragments["sent"] >= 2 * len(large), fragments  # the answers, fragmented
    assert fragments["dropped"] == {}, fragments


BAD_DNS_QUERY = (PROGRAMS / "bad_dns_query.py").read_text()


def _bad_query_lines(ws: Workstation, since: int) -> list[str]:
    """rootd.log's debug lines about malformed DNS queries after offset `since`."""
    return [line for line in ws.log("rootd")[since:].splitlines() if "bad DNS query" in line]


def test_loglevel_reaches_both_local_daemons(connected: Connected) -> None:
    ws = connected.ws
    dns = "10.96.0.10"  # the cluster DNS address rootd serves (resolv.conf's nameserver)
    # At the default level a malformed query leaves no line in rootd.log.
    mark = len(ws.log("rootd"))
    ws.python(BAD_DNS_QUERY, dns)
    result = ws.kp("loglevel", "debug", "--local-only")
    assert result.returncode == 0, result.stderr
    assert "User daemon log level: debug" in result.stdout
    assert "Root daemon log level: debug" in result.stdout
    assert _bad_query_lines(ws, mark) == []  # nothing from before the change
    ws.python(BAD_DNS_QUERY, dns)
    lines = wait_for(
        "rootd's debug line about the bad query",
        lambda: _bad_query_lines(ws, mark),
        timeout=20,
    )
    assert " DEBUG " in lines[0]
    assert "log level set to debug" in ws.log("userd")
    result = ws.kp("loglevel", "info")
    assert result.returncode == 0, result.stderr
    assert "Root daemon log level: info" in result.stdout
    mark = len(ws.log("rootd"))
    ws.python(BAD_DNS_QUERY, dns)
    assert _bad_query_lines(ws, mark) == []


def test_a_timed_loglevel_reverts_by_itself(connected: Connected) -> None:
    ws = connected.ws
    result = ws.kp("loglevel", "debug", "-d", "2")
    assert result.returncode == 0, result.stderr
    assert "Root daemon log level: debug for 2 s" in result.stdout

    def reverted(name: str) -> bool:
        return "log level back to info after 2 s" in ws.log(name)

    for name in ("rootd", "userd"):
        wait_for(f"{name} going back to info", lambda: reverted(name), timeout=20)  # noqa: B023


# Malformed packets written straight into kp0 from ws1 (an AF_PACKET socket bound to the
# device: nothing can leave through another interface). Sources are ws1's own address on
# the path to the Service and destinations the echo Service, so any answer rootd writes
# back stays on this machine; the version nibble stays 4 so no byte becomes an address.
FLOOD = (PROGRAMS / "malformed_flood.py").read_text()

FLOOD_PACKETS = 20_000
FLOOD_SECONDS = 30.0
RSS_GROWTH_LIMIT_KIB = 64 * 1024


def test_rootd_survives_a_malformed_packet_flood(connected: Connected) -> None:
    """Runs last in the module: it makes rootd log fragment drops."""
    ws = connected.ws
    pid = ws.rootd_pid()
    before = ws.rootd_memory()
    flood = ws.python(
        FLOOD,
        connected.udp.service_ip,
        str(connected.udp.service_port),
        str(FLOOD_PACKETS),
        str(FLOOD_SECONDS),
        timeout=FLOOD_SECONDS + 60,
    )
    after = ws.rootd_memory()
    print("flood:", flood, "rootd KiB before", before, "after", after)
    assert ws.rootd_pid() == pid, "rootd died under the flood\n" + ws.logs()
    assert flood["sent"] == FLOOD_PACKETS
    assert after["VmRSS"] - before["VmRSS"] < RSS_GROWTH_LIMIT_KIB
    # It keeps serving, reassembly included.
    answer = ws.python(
        UDP_SIZES_CLIENT,
        f"udp-echo.{connected.namespace}",
        str(connected.udp.service_port),
        "1,8192,65507",
    )
    failed = {size: r for size, r in answer["results"].items() if not r["ok"]}
    assert not failed, f"{failed}\n{ws.logs()}"
    drops = [line for line in ws.log("rootd").splitlines() if "IP fragment(s)" in line]
    assert drops, "the flood's fragment drops were not logged\n" + ws.logs()
    # Rate-limited: at most one line per 10 s of flood (plus the first).
    assert len(drops) <= flood["seconds"] / 10 + 2, drops

    # The drops by reason in status too.
    def dropped() -> dict[str, int] | None:
        fragments = ws.status()["connection"]["ip_fragments"]  # type: ignore[index]
        return dict(fragments["dropped"]) or None

    reasons = wait_for("status to count the flood's drops", dropped, timeout=10)
    assert all(count > 0 for count in reasons.values()), reasons
