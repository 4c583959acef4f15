"""kubepresence benchmarks (`nox -s bench`): every figure beside its same-run baseline.

Writes bench-results/results.json and bench-results/results.md. The cluster-level suite
(issue 8) adds the outbound, inbound, latency and connect figures on the local cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import uvloop

from benchmarks import tunnel_transport

ROOT = Path(__file__).resolve().parent.parent


async def transport_suite(size: int, rounds: int) -> dict[str, str | int | float]:
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
        "baseline_mb_per_s": round(d, 1),
        "measured_mb_per_s": round(t, 1),
        "ratio": round(t / d, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    results = [uvloop.run(transport_suite(args.size_mib * 1024 * 1024, args.rounds))]
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
    table = [
        "| benchmark | baseline | baseline MB/s | measured MB/s | ratio |",
        "|---|---|---|---|---|",
        *(
            f"| {b['name']} | {b['baseline']} | {b['baseline_mb_per_s']} | "
            f"{b['measured_mb_per_s']} | {b['ratio']} |"
            for b in results
        ),
    ]
    (args.out / "results.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
