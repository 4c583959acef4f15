"""kubepresence benchmarks (`nox -s bench`): every figure beside its same-run baseline.

Suites:
- the cluster suite (benchmarks/cluster): direct, `kubectl port-forward`, kubepresence
  outbound and inbound on the local cluster; throughput, latency, concurrency, connect and
  intercept times, RSS and CPU per GiB of every kubepresence process (root, cluster up);
- tunnel transport: userd's manager client → the manager's Tunnel → a TCP sink, against
  direct loopback TCP into the same sink (the gRPC half of the data path);
- TCP engine (root only): the kernel → TUN → rootd's userspace TCP engine → an in-process
  sink/source, against the kernel's loopback TCP in the same namespace (the TUN half);
- the manager at scale (benchmarks/cluster/scale.py; root, cluster up): one manager serving
  200 simulated client sessions, 2,000 flows and 100 intercepts, against the same manager
  serving one session: its RSS and CPU, dial and keep-alive p50/p99.

A full run writes results.json (everything, with the machine and the versions), results.md
(measured, baseline, ratio, the issue's target, met/missed) and chart.png under
benchmarks/results/<version>/. `--quick` (smaller sizes, under 3 minutes) writes to
bench-results/quick/ and fails only if a figure was not produced, never on a speed.
`--profile` adds py-spy profiles of userd, rootd, the manager and the agent during one
more transfer each way, outbound and inbound.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import tcp_engine, tunnel_transport
from kubepresence.protocol.allocator import tune_allocator

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("protocol", "cli", "userd", "rootd", "manager", "agent")
log = logging.getLogger("benchmarks")


async def transport_suite(size: int, rounds: int) -> dict[str, Any]:
    tune_allocator()  # as the daemons whose halves run here do at start
    direct, tunnel = [], []
    for _ in range(rounds):  # interleaved, so machine noise hits both paths alike
        direct.append((await tunnel_transport.direct(size)).mb_per_s)
        tunnel.append((await tunnel_transport.tunnelled(size)).mb_per_s)
    d, t = statistics.median(direct), statistics.median(tunnel)
    return {
        "name": "tunnel transport, one flow, userd client -> manager Tunnel -> TCP sink",
        "bytes_per_round": size,
        "rounds": rounds,
        "baseline": "direct loopback TCP into the same sink",
        "rows": [("upload MB/s", round(t, 1), round(d, 1))],
    }


def engine_rows(result: dict[str, Any]) -> dict[str, Any]:
    """The TCP engine's figures in the common row form."""
    result["rows"] = [
        ("upload MB/s", result["upload_mb_per_s"], result["upload_baseline_mb_per_s"]),
        ("download MB/s", result["download_mb_per_s"], result["download_baseline_mb_per_s"]),
    ]
    return result


async def component_suites(size: int, rounds: int) -> list[dict[str, Any]]:
    results = [await transport_suite(size, rounds)]
    if os.geteuid() == 0:
        engine = await tcp_engine.suite(size, rounds, ["vnet+TSO", "plain"])
        results.extend(engine_rows(result) for result in engine)
    else:
        print("bench: the TCP engine suite needs root (network namespaces): skipped")
    return results


def _first_line(path: Path, prefix: str) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(prefix)), None)


def machine() -> dict[str, Any]:
    mem_kib = _first_line(Path("/proc/meminfo"), "MemTotal")
    return {
        "cpu": _first_line(Path("/proc/cpuinfo"), "model name"),
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem_kib.split()[0]) / (1 << 20), 1) if mem_kib else None,
        "kernel": platform.release(),
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in PARTS:
        try:
            found[f"kubepresence-{part}"] = metadata.version(f"kubepresence-{part}")
        except metadata.PackageNotFoundError:
            found[f"kubepresence-{part}"] = None
    for name in ("grpclib", "betterproto2", "uvloop"):
        found[name] = metadata.version(name)
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    found["git"] = git.stdout.strip() or None
    return found


def kubernetes_version() -> str | None:
    from kpcluster import kube

    try:
        answer = json.loads(kube.kubectl("version", "-o", "json", timeout=30))
    except Exception as error:  # noqa: BLE001 (a version we cannot read is reported, not fatal)
        return f"unknown ({error})"
    return str(answer.get("serverVersion", {}).get("gitVersion"))


def render(full: dict[str, Any], out: Path) -> list[Any]:
    """results.json, results.md and chart.png from a run's data; returns its figures."""
    from benchmarks.cluster import report

    figures = report.component_figures(full.get("components", []))
    if "cluster" in full:
        figures += report.cluster_figures(full["cluster"])
        report.chart(full["cluster"], out / "chart.png")
    if "scale" in full:
        figures += report.scale_figures(full["scale"])
    machine, found = full["machine"], full["versions"]
    header = [
        f"# kubepresence benchmarks {found['kubepresence-cli']} ({full['mode']}, {full['date']})",
        "",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB, "
        f"kernel {machine['kernel']}, Python {machine['python']}; Kubernetes "
        f"{found.get('kubernetes')}; git {found['git']}. Run took {full['seconds']} s.",
        "Each ratio is measured / baseline from the same run; `results.json` has the raw samples.",
    ]
    report.write(full, figures, out, header)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes; check every figure is produced"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the daemons")
    parser.add_argument("--only", choices=("all", "cluster", "components", "scale"), default="all")
    parser.add_argument("--out", type=Path, help="results folder (default: see above)")
    parser.add_argument(
        "--render", type=Path, metavar="DIR", help="only re-render DIR/results.json (md, png)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.render:
        render(json.loads((args.render / "results.json").read_text()), args.render)
        print((args.render / "results.md").read_text())
        return 0

    from benchmarks.cluster import clients, report

    started = time.monotonic()
    version = metadata.version("kubepresence-cli")
    out: Path = args.out or (
        ROOT / "bench-results" / "quick"
        if args.quick
        else ROOT / "benchmarks" / "results" / version
    )
    out.mkdir(parents=True, exist_ok=True)
    full: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "profile": args.profile,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
    }
    failed = False
    if args.only in ("all", "components"):
        size = (16 if args.quick else 256) << 20
        full["components"] = uvloop.run(component_suites(size, 1 if args.quick else 3))
    if args.only in ("all", "cluster"):
        from benchmarks.cluster.suite import Run

        full["versions"]["kubernetes"] = kubernetes_version()
        run = Run(
            clients.QUICK if args.quick else clients.FULL,
            quick=args.quick,
            profile=args.profile,
            work_dir=ROOT / "bench-results" / "work",
        )
        try:
            run.run()
        except Exception as error:
            log.exception("the cluster suite failed")
            run.problems.append(f"suite failed: {error!r}")
            failed = True
        full["cluster"] = run.results()
    if args.only in ("all", "scale"):
        from benchmarks.cluster import scale

        full["versions"].setdefault("kubernetes", kubernetes_version())
        scaling = scale.ScaleRun(
            scale.QUICK if args.quick else scale.FULL, work_dir=ROOT / "bench-results" / "work"
        )
        try:
            scaling.run()
        except Exception as error:
            log.exception("the manager-at-scale suite failed")
            scaling.problems.append(f"suite failed: {error!r}")
            failed = True
        full["scale"] = scaling.results()
    full["seconds"] = round(time.monotonic() - started, 1)
    figures = render(full, out)
    print((out / "results.md").read_text())
    missing = [f.figure for f in figures if f.measured is None and f.figure not in report.OPTIONAL]
    problems = full.get("cluster", {}).get("problems", [])
    problems += [f"scale: {p}" for p in full.get("scale", {}).get("problems", [])]
    for path in full.get("cluster", {}).get("paths", {}).values():
        problems += [f"{path['path']}: {p}" for p in path["problems"]]
    if problems:
        print("problems:\n  " + "\n  ".join(problems))
    if args.quick and (missing or failed):
        print(f"bench --quick: figures not produced: {missing}")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
