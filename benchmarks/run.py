"""kubepresence benchmarks (`nox -s bench`): every figure beside its same-run baseline.

Suites:
- tunnel transport: userd's manager client → the manager's Tunnel → a TCP sink, against
  direct loopback TCP into the same sink (the gRPC half of the data path);
- TCP engine (root only): the kernel → TUN → rootd's userspace TCP engine → an in-process
  sink/source, against the kernel's loopback TCP in the same namespace (the TUN half).

Writes bench-results/results.json (everything) and bench-results/results.md (one row per
figure: measured, baseline, ratio). The cluster-level suite (outbound, inbound, latency,
connect) comes with the benchmarks issue.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import tcp_engine, tunnel_transport

ROOT = Path(__file__).resolve().parent.parent


async def transport_suite(size: int, rounds: int) -> dict[str, Any]:
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


async def all_suites(size: int, rounds: int) -> list[dict[str, Any]]:
    results = [await transport_suite(size, rounds)]
    if os.geteuid() == 0:
        engine = await tcp_engine.suite(size, rounds, ["vnet+TSO", "plain"])
        results.extend(engine_rows(result) for result in engine)
    else:
        print("bench: the TCP engine suite needs root (network namespaces): skipped")
    return results


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| benchmark | figure | measured | baseline | ratio | baseline is |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for figure, measured, baseline in result["rows"]:
            lines.append(
                f"| {result['name']} | {figure} | {measured} | {baseline} | "
                f"{measured / baseline:.3f} | {result['baseline']} |"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    results = uvloop.run(all_suites(args.size_mib * 1024 * 1024, args.rounds))
    report = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "platform": platform.platform(),
        },
        "benchmarks": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    lines = table(results)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
