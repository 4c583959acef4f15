"""Command line of the local cluster: prepare, up, down, status, logs, kubeconfig, ws."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from . import imagebuild, kube, layout, lifecycle, network, preparing, supervisor
from .commands import ClusterError

log = logging.getLogger("kpcluster")


def _cmd_prepare(args: argparse.Namespace) -> int:
    for image in preparing.prepare():
        print(f"{image.name}\t{image.tarball}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    timings = lifecycle.up(keep_on_failure=args.keep_on_failure)
    if timings:
        print(json.dumps(timings))
    print(
        f"cluster up; kubeconfig {layout.ADMIN_KUBECONFIG},"
        f" workstation {layout.WORKSTATION_KUBECONFIG}"
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    lifecycle.down()
    left = lifecycle.traces_left()
    if left:
        print("left behind: " + ", ".join(left), file=sys.stderr)
        return 1
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    procs = supervisor.tracked()
    healthy = True
    for name, alive in lifecycle.component_states().items():
        pid = procs[name].pid if name in procs else "-"
        print(f"{name:24} {'running' if alive else 'DOWN':8} pid {pid}")
        healthy &= alive
    guard = network.guard_present()
    print(f"{'nft guard':24} {'present' if guard else 'ABSENT'}")
    if guard:
        counters = network.guard_counters()
        print(f"{'guard drops':24} {json.dumps(counters)}")
        healthy &= not network.leak_drops(counters)
    api = kube.api_ready()
    print(f"{'api /readyz':24} {'ok' if api else 'FAIL'}")
    if api:
        node = kube.node_ready()
        dns = kube.deployment_available("coredns", "kube-system")
        print(f"{'node Ready':24} {node}\n{'CoreDNS Available':24} {dns}")
        healthy &= node and dns
    ws = layout.WORKSTATION_NETNS in network.netns_list()
    print(f"{'workstation netns':24} {'present' if ws else 'ABSENT'}")
    for name in ("kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward"):
        print(f"{name:24} {network.read_sysctl(name)}")
    return 0 if healthy and api and guard and ws else 1


def _cmd_logs(args: argparse.Namespace) -> int:
    if not args.component:
        for path in sorted(layout.LOGS.glob("*.log")):
            print(path.stem)
        return 0
    print("\n".join(lifecycle.logs_tail(args.component, args.lines)))
    return 0


def _cmd_images(args: argparse.Namespace) -> int:
    """Build the kubepresence manager/agent images; import them when the cluster runs."""
    version = args.version or imagebuild.project_version()
    built = imagebuild.build_kubepresence_images(version)
    states = lifecycle.component_states()
    for image in built:
        if states.get("containerd"):
            lifecycle.import_image(image)
        print(f"{image.name}\t{image.tarball}")
    return 0


def _cmd_kubeconfig(args: argparse.Namespace) -> int:
    print(layout.WORKSTATION_KUBECONFIG if args.workstation else layout.ADMIN_KUBECONFIG)
    return 0


def ws_command(words: Sequence[str]) -> list[str]:
    """The command after `ws`: only the first "--" separates; later ones are the command's."""
    return list(words[1:] if words[:1] == ["--"] else words)


def _cmd_ws(args: argparse.Namespace) -> int:
    command = ws_command(args.command)
    if not command:
        raise ClusterError("ws needs a command, e.g. `ws -- kubectl get nodes`")
    env = kube.kubectl_env(layout.WORKSTATION_KUBECONFIG)
    argv = ["ip", "netns", "exec", layout.WORKSTATION_NETNS, *command]
    os.execvpe("ip", argv, env)


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One changing command at a time (two `up`s at once would fight over every resource)."""
    layout.CACHE.mkdir(parents=True, exist_ok=True)
    with (layout.CACHE / "cluster.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another cluster.py holds %s; waiting", lock.name)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cluster.py", description="kubepresence's local single-node Kubernetes cluster"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="install packages, build binaries and images").set_defaults(
        fn=_cmd_prepare
    )
    up = sub.add_parser("up", help="bring the cluster up (idempotent)")
    up.add_argument(
        "--keep-on-failure", action="store_true", help="leave a failed bring-up for debugging"
    )
    up.set_defaults(fn=_cmd_up)
    sub.add_parser("down", help="stop everything and remove all traces").set_defaults(fn=_cmd_down)
    sub.add_parser("status", help="component, guard and health status").set_defaults(fn=_cmd_status)
    logs = sub.add_parser("logs", help="list components, or tail one component's log")
    logs.add_argument("component", nargs="?")
    logs.add_argument("-n", "--lines", type=int, default=100)
    logs.set_defaults(fn=_cmd_logs)
    img = sub.add_parser(
        "images", help="build localhost/kubepresence-{manager,agent}:<version> (import if up)"
    )
    img.add_argument("--version", help="image tag (default: packages/manager's version)")
    img.set_defaults(fn=_cmd_images)
    kc = sub.add_parser("kubeconfig", help="print the admin (or workstation) kubeconfig path")
    kc.add_argument("--workstation", action="store_true")
    kc.set_defaults(fn=_cmd_kubeconfig)
    ws = sub.add_parser("ws", help="run a command in the workstation namespace (KUBECONFIG set)")
    ws.add_argument("command", nargs=argparse.REMAINDER)
    ws.set_defaults(fn=_cmd_ws)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.geteuid() != 0 and args.cmd not in ("kubeconfig", "logs"):
        print("cluster.py must run as root", file=sys.stderr)
        return 2
    try:
        if args.cmd in ("prepare", "up", "down", "images", "status"):
            # Every command that looks at or changes the machine runs nft, ip, ctr ...:
            # install them first (a no-op when present), before any of them is called.
            with _exclusive():
                preparing.install_packages()
        if args.cmd in ("prepare", "up", "down", "images"):
            with _exclusive():
                return int(args.fn(args))
        return int(args.fn(args))
    except ClusterError as exc:
        log.error("%s", exc)
        return 1
