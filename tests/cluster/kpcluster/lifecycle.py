"""Bringing the cluster up and down, and reporting on it.

`up` is idempotent: a healthy cluster is left alone; anything else (a crashed earlier run, a
half-started one) is torn down first, then everything starts in the order of notes §10,
waiting for each piece before the next. `down` undoes all of it, using a snapshot taken
before the first change to put back sysctls and to know which directories, nft tables and
namespaces were already there. The guard table is the first thing in and the last thing out.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import (
    configs,
    imagebuild,
    kube,
    layout,
    manifests,
    mounts,
    network,
    pki,
    preparing,
    supervisor,
)
from .commands import ClusterError, run, wait_for

log = logging.getLogger(__name__)

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE = ("kubelet", "kube-proxy")
COMPONENTS = ("containerd", *CONTROL_PLANE, *NODE)
IMAGES_FILE = layout.STATE / "images.json"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# kube-apiserver finishes its shutdown sequence in well under a second, then lingers (seen:
# > 15 s) with nothing left to serve; its state dies with etcd's anyway, so do not wait long.
STOP_TIMEOUTS = {"kube-apiserver": 3.0}
# Paths bring-up may create outside its own directories; removed on down only if new.
FOREIGN_PATHS = (
    Path("/run/netns"),
    Path("/etc/netns"),
    Path("/var/lib/cni"),
    Path("/var/log/containers"),
    Path("/var/lib/kubelet"),
    Path("/etc/kubernetes"),
    Path("/run/containerd"),
    Path("/var/lib/containerd"),
    Path("/opt/containerd"),
    Path("/etc/cni"),
)
# Directories other tools use too (ip netns): removed only when empty once ours are gone.
SHARED_PATHS = (Path("/run/netns"), Path("/etc/netns"))
TASKS = layout.CONTAINERD_STATE / "io.containerd.runtime.v2.task"
CTR = ["ctr", "--address", str(layout.CONTAINERD_SOCK)]


@dataclass
class Before:
    """What the machine looked like before the first bring-up step."""

    sysctls: dict[str, str] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    existing_paths: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)

    @classmethod
    def capture(cls) -> Before:
        return cls(
            sysctls=network.sysctl_snapshot(),
            nft_tables=network.nft_tables(),
            netns=network.netns_list(),
            existing_paths=[str(p) for p in FOREIGN_PATHS if p.exists()],
            mounts=mounts.mount_points(),
        )

    @classmethod
    def load(cls) -> Before | None:
        if not layout.BEFORE.exists():
            return None
        return cls(**json.loads(layout.BEFORE.read_text()))

    def save(self) -> None:
        layout.BEFORE.parent.mkdir(parents=True, exist_ok=True)
        layout.BEFORE.write_text(json.dumps(self.__dict__, indent=1))


# --- component command lines -------------------------------------------------------------


def _k8s(name: str) -> str:
    return str(layout.binary("kubernetes", name))


def command_lines() -> dict[str, list[str]]:
    p, e = layout.PKI, layout.CONFIG
    return {
        "containerd": ["containerd", "--config", str(layout.CONTAINERD_CONFIG)],
        "etcd": [
            str(layout.binary("etcd")),
            "--name=lab",
            f"--data-dir={layout.ETCD_DATA}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=lab=http://127.0.0.1:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--quota-backend-bytes=2147483648",
            # A throwaway test cluster: durability is not worth the fsync latency.
            "--unsafe-no-fsync",
        ],
        "kube-apiserver": [
            _k8s("kube-apiserver"),
            f"--advertise-address={layout.NODE_IP}",
            f"--bind-address={layout.NODE_IP}",
            f"--secure-port={layout.API_PORT}",
            "--etcd-servers=http://127.0.0.1:2379",
            f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
            f"--client-ca-file={p}/ca.crt",
            f"--tls-cert-file={p}/apiserver.crt",
            f"--tls-private-key-file={p}/apiserver.key",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={p}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={p}/apiserver-kubelet-client.key",
            "--profiling=false",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p}/sa.pub",
            f"--service-account-signing-key-file={p}/sa.key",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--requestheader-client-ca-file={p}/front-proxy-ca.crt",
            f"--proxy-client-cert-file={p}/front-proxy-client.crt",
            f"--proxy-client-key-file={p}/front-proxy-client.key",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        ],
        "kube-controller-manager": [
            _k8s("kube-controller-manager"),
            f"--kubeconfig={e}/controller-manager.conf",
            f"--authentication-kubeconfig={e}/controller-manager.conf",
            f"--authorization-kubeconfig={e}/controller-manager.conf",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p}/sa.key",
            f"--root-ca-file={p}/ca.crt",
            f"--cluster-signing-cert-file={p}/ca.crt",
            f"--cluster-signing-key-file={p}/ca.key",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={layout.POD_CIDR}",
            "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={layout.SERVICE_CIDR}",
        ],
        "kube-scheduler": [
            _k8s("kube-scheduler"),
            f"--kubeconfig={e}/scheduler.conf",
            f"--authentication-kubeconfig={e}/scheduler.conf",
            f"--authorization-kubeconfig={e}/scheduler.conf",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ],
        "kubelet": [
            _k8s("kubelet"),
            f"--config={e}/kubelet.yaml",
            f"--kubeconfig={e}/kubelet.conf",
            f"--root-dir={layout.KUBELET_ROOT}",
            f"--hostname-override={layout.NODE_NAME}",
            f"--node-ip={layout.NODE_IP}",
            "--v=2",
        ],
        "kube-proxy": [_k8s("kube-proxy"), f"--config={e}/kube-proxy.yaml", "--v=2"],
    }


# --- status ------------------------------------------------------------------------------


def component_states() -> dict[str, bool]:
    procs = supervisor.tracked()
    return {name: name in procs and supervisor.is_alive(procs[name]) for name in COMPONENTS}


def is_healthy() -> bool:
    """Everything running and answering; cheap enough to call before every test session."""
    if not all(component_states().values()):
        return False
    if not network.guard_present() or layout.WORKSTATION_NETNS not in network.netns_list():
        return False
    if not kube.api_ready():
        return False
    return kube.node_ready() and kube.deployment_available("coredns", "kube-system")


def traces_left() -> list[str]:
    """Anything a previous run left behind (pid files, links, namespaces, guard, mounts)."""
    found = (
        [f"pid file {p}" for p in sorted(layout.PIDS.glob("*.pid"))] if layout.PIDS.is_dir() else []
    )
    found += [
        f"link {n}"
        for n in (
            layout.LAN_BRIDGE,
            layout.SERVICE_SINK,
            layout.POD_BRIDGE,
            layout.WORKSTATION_HOST_VETH,
        )
        if network.link_exists(n)
    ]
    found += [
        f"netns {n}"
        for n in network.netns_list()
        if n == layout.WORKSTATION_NETNS or n.startswith("cni-")
    ]
    if network.guard_present():
        found.append(f"nft table {layout.GUARD_FAMILY} {layout.GUARD_TABLE}")
    found += [f"mount {m}" for m in mounts.mounts_under(layout.STATE, layout.DATA)]
    found += [f"cgroup {p}" for p in CGROUP_ROOT.glob("*/kubepods")]
    if layout.BEFORE.exists():
        found.append(f"snapshot {layout.BEFORE}")
    return found


def images() -> dict[str, str]:
    """Short name -> full image reference of the images the running cluster imported."""
    return dict(json.loads(IMAGES_FILE.read_text())) if IMAGES_FILE.exists() else {}


# --- up ----------------------------------------------------------------------------------


def up(*, keep_on_failure: bool = False) -> dict[str, float]:
    """Bring the cluster up (or confirm it is up); return the time each phase took."""
    # First, before any probe below runs nft, ip or ctr: on a fresh machine they are absent.
    preparing.install_packages()
    if is_healthy():
        log.info("cluster already up and healthy")
        _refresh_images(preparing.prepare())
        return {}
    leftovers = traces_left()
    if leftovers:
        log.info("cleaning up after an earlier run: %s", ", ".join(leftovers))
        down()
    timings: dict[str, float] = {}
    start = time.monotonic()
    built = preparing.prepare()
    timings["prepare"] = time.monotonic() - start
    try:
        _bring_up(built, timings)
    except BaseException:
        if not keep_on_failure:
            log.error("bring-up failed; tearing down (logs stay in %s)", layout.LOGS)
            down()
        raise
    timings["total"] = time.monotonic() - start
    return timings


def _catalogue(built: list[imagebuild.BuiltImage]) -> dict[str, str]:
    return {i.name.split("/")[-1].split(":")[0]: i.name for i in built}


def _refresh_images(built: list[imagebuild.BuiltImage]) -> None:
    """Import images whose inputs changed since bring-up (e.g. an edited test app)."""
    current = images()
    for image in built:
        if image.name not in current.values():
            log.info("importing changed image %s", image.name)
            import_image(image)
    IMAGES_FILE.write_text(json.dumps(_catalogue(built), indent=1))


def import_image(image: imagebuild.BuiltImage) -> None:
    """Import into the CRI's namespace (k8s.io); anywhere else kubelet would not see it."""
    run([*CTR, "-n", "k8s.io", "images", "import", str(image.tarball)], timeout=300)


def _phase(timings: dict[str, float], name: str, t0: float) -> float:
    now = time.monotonic()
    timings[name] = round(now - t0, 2)
    log.info("phase %s: %.1f s", name, now - t0)
    return now


def _bring_up(built: list[imagebuild.BuiltImage], timings: dict[str, float]) -> None:
    t = time.monotonic()
    if not layout.BEFORE.exists():
        Before.capture().save()
    for d in (layout.STATE, layout.PIDS, layout.LOGS, layout.DATA, layout.CONFIG):
        d.mkdir(parents=True, exist_ok=True)
    check_disk()

    # The guard first: nothing may forward before it is in place.
    network.install_guard()
    network.create_bridges()
    network.enable_forwarding()
    # Before containerd mounts the first pod's namespace there (issue 21).
    network.prepare_netns_dir()
    t = _phase(timings, "network", t)

    pause = next(i for i in built if i.name == imagebuild.PAUSE_IMAGE)
    pki.write_all()
    configs.write_all(pause.name)
    cmds = command_lines()
    t = _phase(timings, "config", t)

    supervisor.start("containerd", cmds["containerd"])
    wait_for(
        "containerd",
        lambda: run([*CTR, "version"], check=False, timeout=10).returncode == 0,
        timeout=30,
        interval=0.2,
    )
    for image in built:
        import_image(image)
    IMAGES_FILE.write_text(json.dumps(_catalogue(built), indent=1))
    t = _phase(timings, "containerd+images", t)

    supervisor.start("etcd", cmds["etcd"])
    wait_for("etcd /health", _etcd_healthy, timeout=30, interval=0.2)
    supervisor.start("kube-apiserver", cmds["kube-apiserver"])
    wait_for(
        "kube-apiserver /readyz",
        _alive_and(kube.api_ready, "kube-apiserver"),
        timeout=120,
        interval=0.5,
    )
    t = _phase(timings, "etcd+apiserver", t)

    supervisor.start("kube-controller-manager", cmds["kube-controller-manager"])
    supervisor.start("kube-scheduler", cmds["kube-scheduler"])
    panic_before = network.read_sysctl("kernel.panic_on_oops")
    supervisor.start("kubelet", cmds["kubelet"])
    _undo_kubelet_panic_settings(panic_before)
    supervisor.start("kube-proxy", cmds["kube-proxy"])
    kube.wait_node_ready(timeout=180)
    t = _phase(timings, "node-ready", t)

    kube.apply(manifests.coredns(next(i.name for i in built if "/coredns:" in i.name)))
    wait_for(
        "CoreDNS Available",
        _alive_and(lambda: kube.deployment_available("coredns", "kube-system"), *COMPONENTS),
        timeout=180,
        interval=1,
    )
    t = _phase(timings, "coredns", t)

    network.create_workstation()
    _phase(timings, "workstation", t)


def _alive_and(probe: Any, *names: str) -> Any:
    """Wrap a readiness probe so a crashed component fails the wait at once, with its log."""

    def check() -> object:
        states = component_states()
        dead = [n for n in names if not states.get(n)]
        if dead:
            tail = "\n".join(logs_tail(dead[0], 30, current_run=True))
            raise RuntimeError(f"{dead[0]} died during bring-up; last log lines:\n{tail}")
        return probe()

    return check


def _etcd_healthy() -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:2379/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")
    except OSError:
        return False


def _undo_kubelet_panic_settings(panic_on_oops_before: str | None) -> None:
    """kubelet sets kernel.panic_on_oops=1 and kernel.panic=10 at start (notes R4); undo it.

    It writes them once, early in its start-up; wait for that (bounded), then put back the
    values from the snapshot, so a kernel oops does not reboot the VM.
    """
    before = Before.load()
    wanted = before.sysctls if before else {}
    if panic_on_oops_before != "1":
        try:
            wait_for(
                "kubelet's kernel tunables",
                _alive_and(lambda: network.read_sysctl("kernel.panic_on_oops") == "1", "kubelet"),
                timeout=60,
                interval=0.2,
            )
        except ClusterError:
            log.warning("kubelet did not set kernel.panic_on_oops within 60 s; resetting anyway")
    for name in ("kernel.panic_on_oops", "kernel.panic"):
        if name in wanted:
            network.write_sysctl(name, wanted[name])
    log.info(
        "kernel.panic_on_oops=%s kernel.panic=%s restored after kubelet start",
        network.read_sysctl("kernel.panic_on_oops"),
        network.read_sysctl("kernel.panic"),
    )


def check_disk(minimum_free: int = 2 << 30) -> None:
    """kubelet evicts and image GC bites when the disk is nearly full (notes R6)."""
    usage = shutil.disk_usage("/var/lib")
    if usage.free < minimum_free:
        raise ClusterError(
            f"only {usage.free >> 20} MiB free under /var/lib; need {minimum_free >> 20} MiB"
        )


# --- down --------------------------------------------------------------------------------


def down() -> None:
    """Stop everything the cluster started and remove everything it created."""
    before = Before.load()
    procs = supervisor.tracked()
    for name in reversed(("containerd", *CONTROL_PLANE, *NODE)):
        if name == "containerd":
            _remove_pods(procs)
        if name in procs:
            supervisor.stop(procs[name], name, timeout=STOP_TIMEOUTS.get(name, 15))
    for name, proc in procs.items():
        if name not in COMPONENTS:
            supervisor.stop(proc, name)
    _kill_container_leftovers()
    mounts.unmount_under(layout.STATE, layout.DATA, layout.KUBELET_ROOT)

    keep_netns = set(before.netns) if before else set()
    network.delete_link(layout.WORKSTATION_HOST_VETH)
    network.remove_namespaces(
        {layout.WORKSTATION_NETNS}
        | {ns for ns in network.netns_list() if ns.startswith("cni-") and ns not in keep_netns}
    )
    for link in (layout.POD_BRIDGE, layout.SERVICE_SINK, layout.LAN_BRIDGE):
        network.delete_link(link)

    kube_proxy = layout.binary("kubernetes", "kube-proxy")
    if kube_proxy.exists():
        run([kube_proxy, "--cleanup", "--v=0"], check=False, timeout=60)
    network.remove_iptables_leftovers()
    network.remove_nft_tables(keep=before.nft_tables if before else [])
    _remove_cgroups()
    _remove_new_paths(before)
    if before:
        for name, value in before.sysctls.items():
            if network.read_sysctl(name) != value:
                network.write_sysctl(name, value)
    elif network.guard_present():
        # Our guard but no snapshot (lost with a wiped /var/lib): stop routing at least, so
        # nothing can be forwarded once the guard goes. Without either, nothing was ours.
        network.write_sysctl("net.ipv4.ip_forward", "0")
    for d in (layout.STATE, layout.DATA, layout.CONFIG):
        shutil.rmtree(d, ignore_errors=True)
    # Last: only now nothing can forward any more.
    network.remove_guard()
    log.info("cluster down")


def _remove_pods(procs: dict[str, supervisor.Tracked]) -> None:
    """Stop and remove every pod sandbox through the CRI while containerd still runs."""
    containerd = procs.get("containerd")
    crictl = layout.binary("crictl")
    if containerd is None or not supervisor.is_alive(containerd) or not crictl.exists():
        return
    base = [
        str(crictl),
        "--config",
        str(layout.CONFIG / "crictl.yaml"),
        "--runtime-endpoint",
        f"unix://{layout.CONTAINERD_SOCK}",
    ]
    for args in (["stopp"], ["rmp", "-f"]):
        ids = run([*base, "pods", "-q"], check=False, timeout=30).stdout.split()
        if ids:
            run([*base, *args, *ids], check=False, timeout=120)


def shim_processes() -> dict[int, supervisor.Tracked]:
    """containerd shims of this cluster: processes whose working directory is one of its
    task bundles. (Debian's containerd 1.6 shim writes no shim.pid; the cwd identifies a
    shim as ours without looking at any process name.)"""
    found: dict[int, supervisor.Tracked] = {}
    tasks = str(TASKS) + "/"
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cwd = str((proc_dir / "cwd").readlink())
        except OSError:
            continue
        if cwd.startswith(tasks):
            pid = int(proc_dir.name)
            start = supervisor.process_start_time(pid)
            if start is not None:
                found[pid] = supervisor.Tracked(pid, start)
    return found


def task_init_processes() -> dict[int, supervisor.Tracked]:
    """Container init processes, from the init.pid files in the task bundles."""
    found: dict[int, supervisor.Tracked] = {}
    if TASKS.is_dir():
        for pid_path in sorted(TASKS.glob("*/*/init.pid")):
            proc = supervisor.read_pid_file(pid_path)
            if proc is not None:
                found[proc.pid] = proc
    return found


def _kill_container_leftovers() -> None:
    """Kill container processes and shims a crashed run left (normally there are none)."""
    for proc in [*task_init_processes().values(), *shim_processes().values()]:
        supervisor.kill(proc)
    # Whatever still runs in the pods' cgroups was started by this cluster's containers.
    for _ in range(20):
        pids = _kubepods_pids()
        if not pids:
            return
        for pid in pids:
            start = supervisor.process_start_time(pid)
            if start is not None:
                supervisor.kill(supervisor.Tracked(pid, start))
        time.sleep(0.2)
    log.warning("processes still in kubepods cgroups: %s", _kubepods_pids())


def _kubepods_pids() -> list[int]:
    pids: set[int] = set()
    for procs_file in CGROUP_ROOT.glob("pids/kubepods/**/cgroup.procs"):
        try:
            pids.update(int(p) for p in procs_file.read_text().split())
        except OSError:
            continue
    return sorted(pids)


def _remove_cgroups() -> None:
    for top in sorted(CGROUP_ROOT.glob("*/kubepods")):
        for _ in range(10):  # a cgroup whose last task is exiting needs a moment; bounded
            dirs = sorted(
                (p for p in [top, *top.rglob("*")] if p.is_dir()),
                key=lambda p: len(p.parts),
                reverse=True,
            )
            failed = []
            for d in dirs:
                try:
                    d.rmdir()
                except OSError:
                    failed.append(d)
            if not failed:
                break
            time.sleep(0.3)
        else:
            log.warning("could not remove cgroup %s", top)


def _remove_new_paths(before: Before | None) -> None:
    """Remove what bring-up created outside its own directories, if it was not there before."""
    shutil.rmtree(layout.WORKSTATION_NETNS_ETC, ignore_errors=True)
    containers_log = Path("/var/log/containers")
    if containers_log.is_dir():
        for link in containers_log.iterdir():
            if link.is_symlink() and str(link.readlink()).startswith(str(layout.POD_LOGS)):
                link.unlink()
    existed = set(before.existing_paths) if before else {str(p) for p in FOREIGN_PATHS}
    mounted_before = set(before.mounts) if before else set(mounts.mount_points())
    netns_dir = layout.NETNS_DIR
    if (
        str(netns_dir) in existed
        and str(netns_dir) not in mounted_before
        and mounts.is_mount_point(netns_dir)
        and not any(netns_dir.iterdir())
    ):
        # It was a plain directory before `up`, which made it a mount point: undo that too.
        mounts.unmount(str(netns_dir))
    for path in FOREIGN_PATHS:
        if str(path) in existed or not path.exists():
            continue
        if path in SHARED_PATHS:
            if any(path.iterdir()):
                log.info("leaving %s: it holds entries of other tools", path)
                continue
            if str(path) in mounts.mount_points():
                mounts.unmount(str(path))  # `ip netns add` bind-mounts /run/netns on itself
            path.rmdir()
            continue
        mounts.unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


# --- logs --------------------------------------------------------------------------------


def logs_tail(component: str, lines: int = 100, *, current_run: bool = False) -> list[str]:
    """The last lines of a component's log; with current_run, only since its latest start."""
    path = layout.LOGS / f"{component}.log"
    if not path.exists():
        return [f"(no log at {path})"]
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 256 * 1024))
        text = f.read().decode(errors="replace").splitlines()
    if current_run:
        starts = [
            i for i, line in enumerate(text) if line.startswith("==== ") and " start " in line
        ]
        if starts:
            text = text[starts[-1] + 1 :]
    return text[-lines:]
