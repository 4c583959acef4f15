"""The figures of a run with their baselines and the issue's targets, as JSON, a Markdown
table and a PNG chart (throughput bars, latency distributions per path)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DIRECT = "direct"
PORT_FORWARD = "kubectl port-forward"
IN_CLUSTER = "in-cluster (no intercept)"
OUTBOUND = "kubepresence outbound"
INBOUND = "kubepresence inbound"
PATHS = (DIRECT, PORT_FORWARD, OUTBOUND, IN_CLUSTER, INBOUND)
# Figures a run may legitimately lack: the manager gets installed by a connect attempt
# that found ws1 busy, and then no connect is timed while installing it.
OPTIONAL = frozenset({"connect, installing the manager"})
CLI_BASELINE = "kubectl version --client"
CLI_COMMANDS = (
    "kubepresence version",
    "kubepresence status",
    "kubepresence list",
    "kubepresence completion",
)
CLI_LIMIT_S = 0.15
RSS_TARGETS_MIB = {"rootd": 60, "userd": 80, "agent": 50, "manager": 120}


@dataclass(frozen=True)
class Figure:
    """One row of the table: measured beside its baseline, against the issue's target."""

    figure: str
    unit: str
    measured: float | None
    baseline: float | None = None
    baseline_is: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def percentile(samples: Sequence[float], fraction: float) -> float | None:
    """The sample at `fraction` (0.99: p99) of the sorted samples; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _ratio(measured: float | None, baseline: float | None) -> float | None:
    if measured is None or baseline is None or baseline == 0:
        return None
    return round(measured / baseline, 3)


def _met(value: float | None, check: Callable[[float], bool]) -> bool | None:
    return None if value is None else check(value)


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def cluster_figures(cluster: dict[str, Any]) -> list[Figure]:
    paths: dict[str, dict[str, Any]] = cluster.get("paths", {})

    def get(path: str, key: str) -> float | None:
        value = paths.get(path, {}).get(key)
        return None if value is None else float(value)

    figures: list[Figure] = []
    for direction in ("download", "upload"):
        key = f"{direction}_mb_s"
        pf = get(PORT_FORWARD, key)
        for path in (OUTBOUND, INBOUND):
            ratio = _ratio(get(path, key), pf)
            figures.append(
                Figure(
                    f"{path} {direction}",
                    "MB/s",
                    get(path, key),
                    pf,
                    PORT_FORWARD,
                    ratio,
                    "≥ 1.0 x port-forward",
                    _met(ratio, lambda r: r >= 1.0),
                )
            )
        for path, baseline in ((PORT_FORWARD, DIRECT), (OUTBOUND, DIRECT), (INBOUND, IN_CLUSTER)):
            base = get(baseline, key)
            figures.append(
                Figure(
                    f"{path} {direction} (share of {baseline})",
                    "MB/s",
                    get(path, key),
                    base,
                    baseline,
                    _ratio(get(path, key), base),
                )
            )
    # Added keep-alive latency: p50 over the direct path's p50.
    direct_p50 = get(DIRECT, "keepalive_p50_ms")
    added = {
        path: None
        if (p := get(path, "keepalive_p50_ms")) is None or direct_p50 is None
        else round(p - direct_p50, 3)
        for path in (PORT_FORWARD, OUTBOUND)
    }
    ratio = _ratio(added[OUTBOUND], added[PORT_FORWARD])
    figures.append(
        Figure(
            "added keep-alive p50 latency, outbound",
            "ms",
            added[OUTBOUND],
            added[PORT_FORWARD],
            f"{PORT_FORWARD} (both over {DIRECT})",
            ratio,
            "≤ 1.5 x port-forward",
            _met(ratio, lambda r: r <= 1.5),
        )
    )
    cluster_p50 = get(IN_CLUSTER, "keepalive_p50_ms")
    inbound_added = get(INBOUND, "keepalive_p50_ms")
    if inbound_added is not None and cluster_p50 is not None:
        inbound_added = round(inbound_added - cluster_p50, 3)
    figures.append(
        Figure(
            "added keep-alive p50 latency, inbound (over in-cluster)",
            "ms",
            inbound_added,
            added[PORT_FORWARD],
            PORT_FORWARD,
            _ratio(inbound_added, added[PORT_FORWARD]),
        )
    )
    for path in PATHS:
        for kind in ("keepalive", "new_connection"):
            for pct in ("p50", "p99"):
                key = f"{kind}_{pct}_ms"
                base_path = IN_CLUSTER if path == INBOUND else DIRECT
                base = get(base_path, key) if path not in (DIRECT, IN_CLUSTER) else None
                figures.append(
                    Figure(
                        f"{path} {kind.replace('_', ' ')} {pct}",
                        "ms",
                        get(path, key),
                        base,
                        base_path if base is not None else "",
                        _ratio(get(path, key), base),
                    )
                )
    count = cluster.get("sizes", {}).get("concurrent")
    for path in PATHS:
        errors = get(path, "concurrent_errors")
        kinds = paths.get(path, {}).get("raw", {}).get("concurrent", {}).get("errors") or {}
        named = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        target = "0 errors" if path in (OUTBOUND, INBOUND) else ""
        figures.append(
            Figure(
                f"{path}: {count} concurrent connections, errors"
                + (f" ({named})" if named else ""),
                "errors",
                errors,
                target=target,
                met=_met(errors, lambda e: e == 0) if target else None,
            )
        )
    timings = cluster.get("timings", {})
    for key, label, limit in (
        ("connect_s", "connect, manager installed", 2.0),
        ("intercept_to_first_request_s", "intercept to first request, agent injected", 1.0),
    ):
        value = timings.get(key)
        figures.append(
            Figure(
                label,
                "s",
                value,
                target=f"≤ {limit:g} s",
                met=_met(value, _at_most(limit)),
            )
        )
    cli: dict[str, Any] = timings.get("cli", {})
    kubectl_s = (cli.get(CLI_BASELINE) or {}).get("median_s")
    for command in CLI_COMMANDS:
        seconds = (cli.get(command) or {}).get("median_s")
        figures.append(
            Figure(
                f"{command}, daemons running (median wall time)",
                "s",
                seconds,
                kubectl_s,
                CLI_BASELINE,
                _ratio(seconds, kubectl_s),
                f"≤ {CLI_LIMIT_S:g} s",
                _met(seconds, _at_most(CLI_LIMIT_S)),
            )
        )
    for key, label in (
        ("connect_s_min", "connect, manager installed, fastest sample"),
        ("connect_installing_manager_s", "connect, installing the manager"),
        ("intercept_injecting_agent_s", "intercept, injecting the agent (rollout)"),
        ("intercept_command_s", "intercept command, agent injected"),
    ):
        figures.append(Figure(label, "s", timings.get(key)))
    usage: dict[str, Any] = cluster.get("usage", {})
    peaks: dict[str, float] = {}
    for direction in ("outbound", "inbound"):
        for role, peak in usage.get(direction, {}).get("rss_peak_mib", {}).items():
            peaks[role] = max(peaks.get(role, 0.0), peak)
    for role, limit in RSS_TARGETS_MIB.items():
        peak = peaks.get(role)
        figures.append(
            Figure(
                f"{role} RSS under load (peak)",
                "MiB",
                peak,
                target=f"≤ {limit} MiB",
                met=_met(peak, _at_most(limit)),
            )
        )
    for direction in ("outbound", "inbound"):
        per_gib = usage.get(direction, {}).get("cpu_seconds_per_gib", {})
        for role, seconds in per_gib.items():
            figures.append(Figure(f"{role} CPU per GiB, {direction}", "s/GiB", seconds))
    figures += _machine_figures(paths, "machine_cpu_s_per_gib", "per GiB moved", "s/GiB")
    figures += _machine_figures(
        paths, "keepalive_cpu_us_per_request", "per keep-alive request", "µs"
    )
    return figures


def _machine_figures(
    paths: dict[str, dict[str, Any]], key: str, what: str, unit: str
) -> list[Figure]:
    """The machine's CPU (all processes) on each path, against kubectl port-forward's."""
    baseline = paths.get(PORT_FORWARD, {}).get(key, {}).get("(all)")
    figures = []
    for path in PATHS:
        total = paths.get(path, {}).get(key, {}).get("(all)")
        if total is None:
            continue
        compared = path != PORT_FORWARD
        figures.append(
            Figure(
                f"machine CPU {what}, all processes: {path}",
                unit,
                total,
                baseline if compared else None,
                PORT_FORWARD if compared else "",
                _ratio(total, baseline) if compared else None,
            )
        )
    return figures


def machine_cpu_markdown(cluster: dict[str, Any], count: int = 10) -> str:
    """What each path costs the machine by program: per GiB moved, per keep-alive request."""
    return _by_program(
        cluster,
        "machine_cpu_s_per_gib",
        "CPU per GiB moved, by program (bulk transfers, every process on the machine)",
        "CPU seconds per GiB moved while each path's downloads and uploads ran; 2 cores give "
        "at most 2 s per second.",
        count,
    ) + _by_program(
        cluster,
        "keepalive_cpu_us_per_request",
        "CPU per keep-alive request, by program (every process on the machine)",
        "CPU microseconds per request while each path's keep-alive latency was measured "
        "(1 KiB answers, one request at a time): where a request's added latency is spent.",
        count,
    )


def _by_program(cluster: dict[str, Any], key: str, title: str, text: str, count: int) -> str:
    paths: dict[str, dict[str, Any]] = cluster.get("paths", {})
    measured = {p: paths[p][key] for p in PATHS if paths.get(p, {}).get(key)}
    if not measured:
        return ""
    programs: dict[str, float] = {}
    for by_program in measured.values():
        for name, value in by_program.items():
            programs[name] = max(programs.get(name, 0.0), value)
    ranked = sorted(programs, key=lambda name: (name != "(all)", -programs[name]))[: count + 1]
    lines = [
        "",
        f"## {title}",
        "",
        text + " Programs are named as the kernel names them (15 characters).",
        "",
        "| program | " + " | ".join(measured) + " |",
        "|---|" + "---|" * len(measured),
    ]
    for name in ranked:
        cells = [_cell(by_program.get(name)) for by_program in measured.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def component_figures(components: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for result in components:
        for name, measured, baseline in result["rows"]:
            target, met = "", None
            if result["name"].startswith("tunnel transport"):
                target, met = "≥ 600 MB/s", measured >= 600
            elif "vnet+TSO" in result["name"]:
                target, met = "≥ 1000 MB/s", measured >= 1000
            figures.append(
                Figure(
                    f"{result['name']}: {name}",
                    "MB/s",
                    measured,
                    baseline,
                    result["baseline"],
                    _ratio(measured, baseline),
                    target,
                    met,
                )
            )
    return figures


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def markdown(figures: list[Figure], header: list[str]) -> str:
    lines = [
        *header,
        "",
        "| figure | measured | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        baseline = "" if f.baseline is None else f"{_cell(f.baseline)} ({f.baseline_is})"
        met = {True: "met", False: "**missed**", None: ""}[f.met]
        lines.append(
            f"| {f.figure} | {_cell(f.measured)} {f.unit if f.measured is not None else ''} | "
            f"{baseline} | {_cell(f.ratio)} | {f.target} | {met} |"
        )
    return "\n".join(lines) + "\n"


def chart(cluster: dict[str, Any], out: Path) -> None:
    # Only the bench session installs matplotlib; the typecheck session does not have it.
    import matplotlib  # type: ignore[import-not-found]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found]

    paths: dict[str, dict[str, Any]] = cluster.get("paths", {})
    names = [p for p in PATHS if p in paths]
    figure, (bars, keepalive, new) = plt.subplots(1, 3, figsize=(18, 6))
    width = 0.4
    for offset, direction in ((-width / 2, "download"), (width / 2, "upload")):
        values = [paths[n].get(f"{direction}_mb_s") or 0 for n in names]
        bars.bar([i + offset for i in range(len(names))], values, width, label=direction)
    bars.set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
    bars.set_ylabel("MB/s (one connection, checksum checked)")
    bars.set_yscale("log")
    bars.set_title(f"bulk transfer, {cluster.get('sizes', {}).get('bulk_mib')} MiB")
    bars.legend()
    for axis, key, title in (
        (keepalive, "keepalive_ms", "1 KiB request, keep-alive connection"),
        (new, "new_connection_ms", "1 KiB request, new connection each"),
    ):
        data = [paths[n]["raw_samples"][key] or [float("nan")] for n in names]
        axis.boxplot(data, whis=(1, 99), showfliers=False)
        axis.set_xticks(
            range(1, len(names) + 1), [n.replace(" ", "\n", 1) for n in names], fontsize=8
        )
        axis.set_yscale("log")
        axis.set_ylabel("ms (box: p25-p75, whiskers: p1-p99)")
        axis.set_title(title)
    figure.suptitle("kubepresence on the local cluster, each path in the same run")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def profile_markdown(profiles: dict[str, Any], count: int = 10) -> str:
    """The profile's top entries: per transfer and process, by own and by total time."""
    if not profiles:
        return ""
    lines = [
        "",
        "## Where the time goes (py-spy, during one more transfer each way and one more "
        "keep-alive run)",
        "",
        "Share of the samples that held the GIL (py-spy --gil: CPU in Python, or in C called "
        "with the GIL; waiting is not counted). own = in the function itself, total = with "
        "what it calls (leaving out the trunk every sample passes through: main, the loop's "
        "run). `Runner.run` own time is C code of uvloop's event loop (socket and TUN system "
        "calls, callbacks in C), which py-spy does not see into without --native.",
    ]
    for transfer, found in profiles.items():
        for role, top in found.items():
            if role == "transfer" or not isinstance(top, dict):
                continue
            lines += ["", f"### {transfer}: {role}"]
            if "error" in top:
                lines.append(f"not recorded: {top['error']}")
                continue
            lines += [
                "",
                f"{top['samples']} samples during a run of "
                f"{found.get('transfer', {}).get('seconds', 0):.1f} s.",
                "",
                "| own % | function | total % | function |",
                "|---|---|---|---|",
            ]
            for own, total in zip(top["own"][:count], top["total"][:count], strict=False):
                lines.append(
                    f"| {own['percent']} | `{own['function']}` | "
                    f"{total['percent']} | `{total['function']}` |"
                )
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], figures: list[Figure], out_dir: Path, header: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report["figures"] = [asdict(f) for f in figures]
    (out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    profiles = report.get("cluster", {}).get("profile", {})
    (out_dir / "results.md").write_text(
        markdown(figures, header)
        + machine_cpu_markdown(report.get("cluster", {}))
        + profile_markdown(profiles)
    )


# --- the manager at scale (benchmarks/cluster/scale.py) ---------------------------------

SCALE_RSS_LIMIT_MIB = 250
SCALE_DIAL_P99_RATIO = 3.0


def scale_phase(
    events: dict[str, dict[str, Any]],
    *,
    sessions: int,
    flows: int,
    intercepts: int,
    rss_before_mib: float | None,
    rss_peak_mib: float | None,
    cpu_total_s: float | None,
    cpu_steady_s: float | None,
    steady_s: float,
) -> dict[str, Any]:
    """One phase's figures from what the scale client programs said ("probe ready",
    "measured", "probe done", and "load ready", "load done" when a load ran) and the
    manager's usage sampled meanwhile."""
    measured = events.get("measured", {})
    dial_ms: list[float] = measured.get("dial_ms", [])
    keepalive_ms: list[float] = measured.get("keepalive_ms", [])
    readies = [e for name, e in events.items() if name.endswith(" ready")]
    setup_dials = [s for e in readies for s in e.get("setup_dial_ms", [])]
    active = [s for e in readies for s in e.get("intercept_active_ms", [])]
    errors: dict[str, int] = {}
    for name, said in events.items():
        for kind, count in said.get("errors", {}).items():
            key = f"{name.split()[0]} {kind}" if name != "measured" else f"probe {kind}"
            errors[key] = errors.get(key, 0) + count
    dones = [e for name, e in events.items() if name.endswith(" done")]
    return {
        "client_sessions": sessions,
        "agent_sessions": intercepts,
        "flows": flows,
        "flows_open": sum(e.get("flows_open", 0) for e in readies),
        "intercepts": intercepts,
        "setup_s": max((e.get("setup_s", 0.0) for e in readies), default=None),
        "rss_before_mib": rss_before_mib,
        "rss_peak_mib": rss_peak_mib,
        "cpu_setup_s": None
        if cpu_total_s is None or cpu_steady_s is None
        else round(cpu_total_s - cpu_steady_s, 2),
        "cpu_steady_cores": None
        if cpu_steady_s is None or not steady_s
        else round(cpu_steady_s / steady_s, 3),
        "steady_s": round(steady_s, 2),
        "dial_p50_ms": percentile(dial_ms, 0.5),
        "dial_p99_ms": percentile(dial_ms, 0.99),
        "dials": len(dial_ms),
        "keepalive_p50_ms": percentile(keepalive_ms, 0.5),
        "keepalive_p99_ms": percentile(keepalive_ms, 0.99),
        "keepalive_requests": len(keepalive_ms),
        "setup_dial_p50_ms": percentile(setup_dials, 0.5),
        "setup_dial_p99_ms": percentile(setup_dials, 0.99),
        "intercept_active_p99_ms": percentile(active, 0.99),
        "background_requests": sum(e.get("background_requests", 0) for e in dones),
        "client_cpu_s": sum(e.get("client_cpu_s", 0.0) for e in dones),
        "errors": errors,
        "raw_samples": {"dial_ms": dial_ms, "keepalive_ms": keepalive_ms},
    }


def scale_figures(scale: dict[str, Any]) -> list[Figure]:
    """The N-session phase beside the 1-session phase of the same run."""
    phases: dict[str, dict[str, Any]] = scale.get("phases", {})
    one, many = phases.get("one", {}), phases.get("many", {})
    sizes = scale.get("sizes", {})
    n = many.get("client_sessions") or sizes.get("sessions")
    what = (
        f"manager, {n} sessions / {many.get('flows') or sizes.get('flows')} flows / "
        f"{many.get('intercepts') or sizes.get('intercepts')} intercepts"
    )
    baseline_is = "1 session"

    def get(phase: dict[str, Any], key: str) -> float | None:
        value = phase.get(key)
        return None if value is None else float(value)

    figures = []
    rss = get(many, "rss_peak_mib")
    figures.append(
        Figure(
            f"{what}: RSS (peak)",
            "MiB",
            rss,
            get(one, "rss_peak_mib"),
            baseline_is,
            _ratio(rss, get(one, "rss_peak_mib")),
            f"≤ {SCALE_RSS_LIMIT_MIB} MiB",
            _met(rss, _at_most(SCALE_RSS_LIMIT_MIB)),
        )
    )
    for key, label, unit in (
        ("cpu_steady_cores", "CPU while the probe ran (cores)", "cores"),
        ("cpu_setup_s", "CPU to set up the sessions, flows and intercepts", "s"),
        ("dial_p50_ms", "dial p50 (open → CONNECTED)", "ms"),
    ):
        measured, base = get(many, key), get(one, key)
        figures.append(
            Figure(f"{what}: {label}", unit, measured, base, baseline_is, _ratio(measured, base))
        )
    dial_p99, one_p99 = get(many, "dial_p99_ms"), get(one, "dial_p99_ms")
    ratio = _ratio(dial_p99, one_p99)
    figures.append(
        Figure(
            f"{what}: dial p99 (open → CONNECTED)",
            "ms",
            dial_p99,
            one_p99,
            baseline_is,
            ratio,
            f"≤ {SCALE_DIAL_P99_RATIO:g} x 1 session",
            _met(ratio, _at_most(SCALE_DIAL_P99_RATIO)),
        )
    )
    for key, label in (
        ("keepalive_p50_ms", "keep-alive request p50 (64 B echoed, open flow)"),
        ("keepalive_p99_ms", "keep-alive request p99 (64 B echoed, open flow)"),
        ("setup_dial_p99_ms", "dial p99 while all flows were opening"),
    ):
        measured, base = get(many, key), get(one, key)
        figures.append(
            Figure(f"{what}: {label}", "ms", measured, base, baseline_is, _ratio(measured, base))
        )
    for phase, name in ((one, "1 session"), (many, f"{n} sessions")):
        errors = phase.get("errors")
        count = None if errors is None else float(sum(errors.values()))
        named = ", ".join(f"{c} {kind}" for kind, c in (errors or {}).items())
        figures.append(
            Figure(f"manager, {name}: errors" + (f" ({named})" if named else ""), "errors", count)
        )
    return figures
