"""Large UDP datagrams through the VIF, and the log level of the local daemons.

Scenarios (one `kubepresence connect --mapped-namespaces <ns>` for the module, in ws1):
- datagrams of 1, 1472, 1473, 8192, 26000, 65000 and 65507 bytes sent from the workstation
  to the UDP echo Service come back byte-exact: above 1472 bytes the workstation's kernel
  fragments them on kp0 (MTU 1500), rootd reassembles them, and rootd fragments the echo
  pod's equally large answer back; rootd logs no fragment drop;
- `kubepresence loglevel debug -l` reaches both local daemons (userd and rootd write debug
  lines afterwards), `loglevel info` turns it back, `-d SECONDS` reverts by itself, and
  `-r` (the traffic manager and agents) is refused in one line because their protocol has
  no way to set a level at run time.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster, EchoWorkload
from workstation_cli import Workstation, uninstall_manager, ws1_vif_lock

SIZES = (1, 1472, 1473, 8192, 26000, 65000, 65507)

UDP_SIZES_CLIENT = r"""
import hashlib, json, random, socket, sys, time
name, port = sys.argv[1], int(sys.argv[2])
sizes = [int(s) for s in sys.argv[3].split(",")]
address = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.settimeout(10)
results = {}
for size in sizes:
    payload = random.Random(size).randbytes(size)
    started = time.monotonic()
    s.sendto(payload, address)
    try:
        answer = s.recv(65535)
    except TimeoutError:
        results[size] = {"ok": False, "error": "no answer in 10 s"}
        continue
    results[size] = {
        "ok": answer == payload,
        "length": len(answer),
        "ms": round((time.monotonic() - started) * 1000, 1),
    }
print(json.dumps({"address": address[0], "results": results}))
"""


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
    assert "dropped" not in ws.log("rootd"), ws.logs()


BAD_DNS_QUERY = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"\x12\x34not-a-dns-query", (sys.argv[1], 53))
try:
    s.recv(512)  # FORMERR, when rootd answers it
except TimeoutError:
    pass
print("{}")
"""


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


def test_loglevel_remote_only_is_refused_in_one_line(connected: Connected) -> None:
    result = connected.ws.kp("loglevel", "debug", "-r")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "traffic manager" in lines[0]
