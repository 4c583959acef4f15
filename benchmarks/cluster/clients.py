"""Running the benchmark client where a path starts: the node, the workstation (ws1) or a
pod, and the measurements every path gets."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kpcluster import kube, layout

from benchmarks.cluster import processes
from benchmarks.cluster.report import percentile
from benchmarks.cluster.workload import CLIENT_SOURCE, blob_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sizes:
    """How much each measurement moves or repeats (all bounded in time as well)."""

    bulk_mib: int
    bulk_rounds: int
    keepalive_requests: int
    new_connection_requests: int
    concurrent: int
    deadline: float  # seconds, per measurement


FULL = Sizes(
    bulk_mib=256,
    bulk_rounds=3,
    keepalive_requests=1000,
    new_connection_requests=300,
    concurrent=1000,
    deadline=120,
)
QUICK = Sizes(
    bulk_mib=16,
    bulk_rounds=1,
    keepalive_requests=100,
    new_connection_requests=30,
    concurrent=100,
    deadline=30,
)


@dataclass(frozen=True)
class Client:
    """The benchmark client as run at one path's start, and the address it dials."""

    path: str
    prefix: tuple[str, ...]  # argv that runs `python3 -c CLIENT_SOURCE`
    host: str
    port: int
    env: dict[str, str] | None = None

    def argv(self, mode: str, *args: object) -> list[str]:
        return [*self.prefix, mode, self.host, str(self.port), *(str(a) for a in args)]

    def run(self, mode: str, *args: object, timeout: float) -> dict[str, Any]:
        argv = self.argv(mode, *args)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=self.env, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"client timed out after {timeout:.0f} s"}
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return {"error": f"client exit {done.returncode}: {done.stderr.strip()[-500:]}"}
        answer: dict[str, Any] = json.loads(lines[-1])
        return answer

    def start(self, mode: str, *args: object) -> subprocess.Popen[str]:
        """Start the client in the background (e.g. `poll`); the caller ends it by handle."""
        return subprocess.Popen(
            self.argv(mode, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


def on_node(path: str, host: str, port: int) -> Client:
    return Client(path, (sys.executable, "-c", CLIENT_SOURCE), host, port)


def on_workstation(path: str, host: str, port: int) -> Client:
    prefix = ("ip", "netns", "exec", layout.WORKSTATION_NETNS, sys.executable, "-c", CLIENT_SOURCE)
    return Client(path, prefix, host, port, kube.kubectl_env(layout.WORKSTATION_KUBECONFIG))


def in_pod(path: str, namespace: str, pod: str, host: str, port: int) -> Client:
    prefix = (
        str(layout.kubectl()),
        "--kubeconfig",
        str(layout.ADMIN_KUBECONFIG),
        "exec",
        "-n",
        namespace,
        pod,
        "--",
        "python3",
        "-c",
        CLIENT_SOURCE,
    )
    return Client(path, prefix, host, port)


@dataclass
class PathResult:
    """Everything measured on one path; None where a figure could not be produced."""

    path: str
    download_mb_s: float | None = None
    upload_mb_s: float | None = None
    keepalive_ms: list[float] = field(default_factory=list)
    new_connection_ms: list[float] = field(default_factory=list)
    concurrent_ok: int | None = None
    concurrent_errors: int | None = None
    problems: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    # CPU seconds of every program on the machine during the bulk transfers
    machine_cpu_s: dict[str, float] = field(default_factory=dict)
    bulk_bytes: int = 0
    # ... and during the keep-alive requests: where a request's latency is spent
    keepalive_cpu_s: dict[str, float] = field(default_factory=dict)

    def machine_cpu_per_gib(self) -> dict[str, float]:
        """CPU seconds per GiB moved by program, the largest first, with their total."""
        gib = self.bulk_bytes / (1 << 30)
        if not gib or not self.machine_cpu_s:
            return {}
        ranked = sorted(self.machine_cpu_s.items(), key=lambda item: -item[1])
        per_gib = {name: round(seconds / gib, 2) for name, seconds in ranked}
        return {"(all)": round(sum(self.machine_cpu_s.values()) / gib, 2), **per_gib}

    def keepalive_cpu_per_request(self) -> dict[str, float]:
        """CPU microseconds per keep-alive request by program, the largest first, with all."""
        count = len(self.keepalive_ms)
        if not count or not self.keepalive_cpu_s:
            return {}
        ranked = sorted(self.keepalive_cpu_s.items(), key=lambda item: -item[1])
        per_request = {name: round(seconds * 1e6 / count) for name, seconds in ranked}
        return {"(all)": round(sum(self.keepalive_cpu_s.values()) * 1e6 / count), **per_request}

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "download_mb_s": self.download_mb_s,
            "upload_mb_s": self.upload_mb_s,
            "keepalive_p50_ms": percentile(self.keepalive_ms, 0.5),
            "keepalive_p99_ms": percentile(self.keepalive_ms, 0.99),
            "keepalive_requests": len(self.keepalive_ms),
            "new_connection_p50_ms": percentile(self.new_connection_ms, 0.5),
            "new_connection_p99_ms": percentile(self.new_connection_ms, 0.99),
            "new_connection_requests": len(self.new_connection_ms),
            "concurrent_ok": self.concurrent_ok,
            "concurrent_errors": self.concurrent_errors,
            "machine_cpu_s_per_gib": self.machine_cpu_per_gib(),
            "keepalive_cpu_us_per_request": self.keepalive_cpu_per_request(),
            "problems": self.problems,
            "raw": self.raw,
            "raw_samples": {
                "keepalive_ms": self.keepalive_ms,
                "new_connection_ms": self.new_connection_ms,
            },
        }


def bulk(client: Client, sizes: Sizes, result: PathResult) -> int:
    """Download and upload of sizes.bulk_mib on one connection each, checksum checked,
    sizes.bulk_rounds times (the median counts); returns the bytes moved. The CPU time of
    every program on the machine meanwhile goes to `result.machine_cpu_s`."""
    with processes.machine_cpu() as seconds:
        moved = _transfers(client, sizes, result)
    result.machine_cpu_s = seconds
    result.bulk_bytes = moved
    return moved


def _transfers(client: Client, sizes: Sizes, result: PathResult) -> int:
    expected = blob_sha256(sizes.bulk_mib)
    moved = 0
    for mode in ("download", "upload"):
        rates: list[float] = []
        answers = result.raw.setdefault(mode, [])
        for _ in range(sizes.bulk_rounds):
            answer = client.run(mode, sizes.bulk_mib, sizes.deadline, timeout=sizes.deadline + 60)
            answers.append(answer)
            log.info(
                "%s %s: %s", client.path, mode, {k: answer.get(k) for k in ("seconds", "error")}
            )
            if "error" in answer:
                result.problems.append(f"{mode}: {answer['error']}")
            elif answer["bytes"] != sizes.bulk_mib << 20 or answer["sha256"] != expected:
                result.problems.append(f"{mode}: {answer['bytes']} bytes, checksum mismatch")
            else:
                rates.append(answer["bytes"] / answer["seconds"] / 1e6)
                moved += answer["bytes"]
        if rates:
            rate = round(statistics.median(rates), 1)
            if mode == "download":
                result.download_mb_s = rate
            else:
                result.upload_mb_s = rate
    return moved


def requests(client: Client, sizes: Sizes, result: PathResult) -> None:
    """Latency (keep-alive, new connection per request) and the concurrent connections."""
    for mode, count in (
        ("keepalive", sizes.keepalive_requests),
        ("new", sizes.new_connection_requests),
    ):
        with processes.machine_cpu() as seconds:
            answer = client.run("latency", count, mode, sizes.deadline, timeout=sizes.deadline + 60)
        if "error" in answer:
            result.problems.append(f"latency {mode}: {answer['error']}")
            continue
        samples = [round(s, 3) for s in answer["samples_ms"]]
        if answer["errors"]:
            result.problems.append(f"latency {mode}: errors {answer['errors']}")
        if mode == "keepalive":
            result.keepalive_ms = samples
            result.keepalive_cpu_s = seconds
        else:
            result.new_connection_ms = samples
        log.info("%s latency %s: p50 %s ms", client.path, mode, percentile(samples, 0.5))
    answer = client.run("concurrent", sizes.concurrent, sizes.deadline, timeout=sizes.deadline + 60)
    result.raw["concurrent"] = answer
    if "error" in answer:
        result.problems.append(f"concurrent: {answer['error']}")
    else:
        result.concurrent_ok = answer["ok"]
        result.concurrent_errors = sum(answer["errors"].values())
    log.info("%s concurrent: %s", client.path, answer)


def measure(client: Client, sizes: Sizes) -> PathResult:
    result = PathResult(client.path)
    bulk(client, sizes, result)
    requests(client, sizes, result)
    return result


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
