"""The manager-at-scale benchmark's simulated sessions against a real manager service.

Scenarios (no cluster: the manager service over loopback TCP, with no Kubernetes behind
it, and the client program's own echo server):
- the program arrives its clients and agents, gets every intercept ACTIVE through the
  agents' reviews, opens and holds every flow, and says it is ready with no errors;
- it times the dials and keep-alive requests it was asked for, with no errors;
- when its stdin ends it departs: the manager knows no session afterwards;
- the report turns what the programs said into a phase's figures (percentiles, errors by
  program, CPU in cores), and the N-session phase into rows against the targets
  (≤ 250 MiB, dial p99 ≤ 3 x the 1-session p99), with no figure where a phase is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import ClusterNetwork
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.transport import serve_tcp

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster"
PROGRAM = BENCHMARKS / "scaleclient.py"
NETWORK = ClusterNetwork(
    pod_subnets=["10.244.0.0/16"],
    service_subnets=["10.96.0.0/16"],
    cluster_domain="cluster.local",
    dns_service_ip="10.96.0.10",
    cluster_id="test-cluster",
)
LINE_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def event(process: asyncio.subprocess.Process, name: str) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), LINE_TIMEOUT)
    answer: dict[str, Any] = json.loads(line)
    assert answer["event"] == name, answer
    return answer


@pytest.fixture
async def program() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """The program's processes, ended (by handle) after the test."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()
        await process.wait()


@pytest.mark.timeout(60)
async def test_sessions_set_up_measure_and_depart(
    program: list[asyncio.subprocess.Process],
) -> None:
    sessions = SessionRegistry(ttl=30)
    service = ManagerService(
        sessions=sessions, network=NETWORK, dial_timeout=2.0, idle_timeout=30.0
    )
    manager_port, echo_port = free_port(), free_port()
    server = await serve_tcp([service], "127.0.0.1", manager_port)
    try:
        echo = await asyncio.create_subprocess_exec(
            sys.executable, str(PROGRAM), "echo", str(echo_port), stdout=asyncio.subprocess.PIPE
        )
        program.append(echo)
        await event(echo, "ready")
        spec = {
            "manager_host": "127.0.0.1",
            "manager_port": manager_port,
            "echo_host": "127.0.0.1",
            "echo_port": echo_port,
            "namespace": "shop",
            "name": "test",
            "sessions": 3,
            "flows": 7,
            "workloads": ["cart", "till"],
            "setup_deadline": 10.0,
            "background_interval": 0.2,
            "probe_dials": 4,
            "probe_requests": 10,
            "probe_deadline": 10.0,
            "hold": 10.0,
        }
        clients = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROGRAM),
            "sessions",
            json.dumps(spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        program.append(clients)
        ready = await event(clients, "ready")
        assert (ready["parts_ready"], ready["parts"], ready["flows_open"]) == (5, 5, 7)
        assert (len(ready["setup_dial_ms"]), len(ready["intercept_active_ms"])) == (7, 2)
        assert ready["errors"] == {}
        assert len(sessions) == 5  # 3 clients, 2 agents
        measured = await event(clients, "measured")
        assert (len(measured["dial_ms"]), len(measured["keepalive_ms"])) == (4, 10)
        assert measured["errors"] == {}
        await asyncio.sleep(0.5)  # a round of background requests
        assert clients.stdin is not None
        clients.stdin.close()
        done = await event(clients, "done")
        assert done["errors"] == {}
        assert done["background_requests"] > 0
        assert len(sessions) == 0
        assert await asyncio.wait_for(clients.wait(), LINE_TIMEOUT) == 0
    finally:
        server.close()
        await server.wait_closed()


def load_report() -> Any:
    """benchmarks/cluster/report.py (plain data, no cluster), by path: the unit session
    does not put the repository root on sys.path."""
    spec = importlib.util.spec_from_file_location("bench_report", BENCHMARKS / "report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_phase_from_what_the_programs_said() -> None:
    report = load_report()
    events = {
        "load ready": {"setup_s": 4.0, "flows_open": 9, "setup_dial_ms": [5.0, 7.0]},
        "probe ready": {"setup_s": 1.0, "flows_open": 1, "setup_dial_ms": [3.0]},
        "measured": {
            "dial_ms": [float(i) for i in range(1, 101)],
            "keepalive_ms": [2.0, 1.0],
            "errors": {"dial": 1},
        },
        "probe done": {"background_requests": 3, "errors": {}},
        "load done": {"background_requests": 4, "errors": {"remain: TimeoutError": 2}},
    }
    phase = report.scale_phase(
        events,
        sessions=2,
        flows=10,
        intercepts=1,
        rss_before_mib=50.0,
        rss_peak_mib=80.0,
        cpu_total_s=3.0,
        cpu_steady_s=1.0,
        steady_s=4.0,
    )
    assert (phase["dial_p50_ms"], phase["dial_p99_ms"], phase["dials"]) == (51.0, 99.0, 100)
    assert (phase["keepalive_p50_ms"], phase["keepalive_p99_ms"]) == (1.0, 2.0)
    assert (phase["setup_dial_p50_ms"], phase["setup_dial_p99_ms"]) == (5.0, 7.0)
    assert (phase["flows_open"], phase["setup_s"], phase["background_requests"]) == (10, 4.0, 7)
    assert (phase["cpu_steady_cores"], phase["cpu_setup_s"]) == (0.25, 2.0)
    assert phase["errors"] == {"probe dial": 1, "load remain: TimeoutError": 2}


def phase_of(rss: float, dial_p99: float) -> dict[str, Any]:
    return {
        "client_sessions": 200,
        "flows": 2000,
        "intercepts": 100,
        "rss_peak_mib": rss,
        "dial_p99_ms": dial_p99,
        "errors": {},
    }


@pytest.mark.parametrize(
    ("rss", "dial_p99", "met"),
    [(250.0, 6.0, (True, True)), (251.0, 6.1, (False, False))],
)
def test_scale_rows_against_the_targets(
    rss: float, dial_p99: float, met: tuple[bool, bool]
) -> None:
    report = load_report()
    figures = report.scale_figures(
        {"phases": {"one": phase_of(40.0, 2.0), "many": phase_of(rss, dial_p99)}}
    )
    by_name = {f.figure.split(": ", 1)[1]: f for f in figures if ": " in f.figure}
    rss_row, dial_row = by_name["RSS (peak)"], by_name["dial p99 (open → CONNECTED)"]
    assert (rss_row.measured, rss_row.baseline, rss_row.met) == (rss, 40.0, met[0])
    assert (dial_row.ratio, dial_row.met) == (round(dial_p99 / 2.0, 3), met[1])


def test_a_missing_phase_leaves_its_figures_out() -> None:
    report = load_report()
    figures = report.scale_figures({"sizes": {"sessions": 5}, "phases": {"one": phase_of(40, 2)}})
    dial = next(f for f in figures if "dial p99 (open" in f.figure)
    assert (dial.measured, dial.met) == (None, None)
