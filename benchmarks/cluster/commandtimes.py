"""Wall time of short commands, run where it is started (ws1, for the CLI): the median of
N runs after one warm-up run, each command in turn so that load drifts evenly.

Usage: commandtimes.py SPEC, SPEC a JSON object {"rounds": N, "commands": {name: argv}};
prints {name: {"median_s", "samples_s", "failed"}} as JSON. Stdlib only.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

TIMEOUT = 30.0  # one run; a hung command is a failure, not a figure


def timed(argv: list[str]) -> float | None:
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None
    elapsed = time.perf_counter() - started
    return elapsed if done.returncode == 0 else None


def main() -> None:
    spec = json.loads(sys.argv[1])
    commands: dict[str, list[str]] = spec["commands"]
    rounds = int(spec["rounds"])
    samples: dict[str, list[float]] = {name: [] for name in commands}
    failed = dict.fromkeys(commands, 0)
    for argv in commands.values():
        timed(argv)  # warm-up: page cache, bytecode
    for _ in range(rounds):
        for name, argv in commands.items():
            seconds = timed(argv)
            if seconds is None:
                failed[name] += 1
            else:
                samples[name].append(seconds)
    print(
        json.dumps(
            {
                name: {
                    "median_s": round(statistics.median(s), 4) if s else None,
                    "samples_s": [round(x, 4) for x in s],
                    "failed": failed[name],
                }
                for name, s in samples.items()
            }
        )
    )


if __name__ == "__main__":
    main()
