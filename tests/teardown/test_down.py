"""`cluster.py down` leaves the machine as it was before `up`.

Scenarios:
- After down, no process the cluster started is alive: neither the components from the pid
  files, nor containerd's shims, nor container processes (pids read before down).
- No network namespace (ws1, cni-*), no link (k8slan0, ksvc0, cni0, ws1-h), no mount under
  the cluster's directories, no kubepods cgroup, no KUBE-/CNI- iptables chain and no nft
  guard table is left.
- The sysctls bring-up changed (ip_forward, kernel.panic, panic_on_oops, ...) are back to
  their values from before `up`.

- On a machine where /run/netns has never been a mount point (a fresh one: issue 21),
  `up` then `down` leaves nothing either: no namespace, no nsfs mount under /run/netns,
  `ip netns list` without error, and /run/netns not left a mount point.

Runs after the e2e suite in CI; brings the cluster up first if it is not running, so there
is always something to tear down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))

from kpcluster import layout, lifecycle, mounts, network, supervisor


def _pids_to_check() -> dict[str, supervisor.Tracked]:
    procs = {f"component {n}": p for n, p in supervisor.tracked().items()}
    procs.update({f"shim {pid}": p for pid, p in lifecycle.shim_processes().items()})
    procs.update({f"container init {pid}": p for pid, p in lifecycle.task_init_processes().items()})
    return procs


def test_down_leaves_nothing_behind() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nft, containerd)")
    if not lifecycle.is_healthy():
        lifecycle.up()
    before = json.loads(layout.BEFORE.read_text())
    procs = _pids_to_check()
    assert len([k for k in procs if k.startswith("component")]) == len(lifecycle.COMPONENTS)
    assert any(k.startswith("shim") for k in procs), "a running cluster has at least CoreDNS's shim"
    assert any(k.startswith("container init") for k in procs)

    lifecycle.down()

    alive = [name for name, proc in procs.items() if supervisor.is_alive(proc)]
    assert alive == []
    assert [
        n for n in network.netns_list() if n == layout.WORKSTATION_NETNS or n.startswith("cni-")
    ] == []
    for link in (
        layout.LAN_BRIDGE,
        layout.SERVICE_SINK,
        layout.POD_BRIDGE,
        layout.WORKSTATION_HOST_VETH,
    ):
        assert not network.link_exists(link), link
    ours = [f"/run/netns/{layout.WORKSTATION_NETNS}", "/run/netns/cni-"]
    left_mounts = [
        m
        for m in mounts.mount_points()
        if m.startswith((str(layout.STATE), str(layout.DATA), "/run/containerd", *ours))
    ]
    assert left_mounts == []
    assert sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")) == []
    assert not network.guard_present()
    assert network.own_iptables_chains("ip") == {}
    assert network.own_iptables_chains("ip6") == {}
    assert sorted(network.nft_tables()) == sorted(before["nft_tables"])
    assert network.sysctl_snapshot() == before["sysctls"]
    for path in lifecycle.FOREIGN_PATHS:
        if str(path) in before["existing_paths"]:
            assert path.exists(), path
        elif path in lifecycle.SHARED_PATHS and path.exists():
            # Another tool's namespaces appeared meanwhile; ours must be gone from it.
            names = {p.name for p in path.iterdir()}
            assert layout.WORKSTATION_NETNS not in names, path
            assert not [n for n in names if n.startswith("cni-")], path
        else:
            assert not path.exists(), path
    for d in (layout.STATE, layout.DATA, layout.CONFIG, layout.WORKSTATION_NETNS_ETC):
        assert not d.exists(), d
    assert lifecycle.traces_left() == []


def test_up_and_down_where_run_netns_was_never_a_mount_point() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nft, containerd)")
    if lifecycle.is_healthy():
        lifecycle.down()
    netns_dir = layout.NETNS_DIR
    if mounts.is_mount_point(netns_dir):
        # What a fresh machine has: the bind mount of an earlier `ip netns add` removed.
        assert list(netns_dir.iterdir()) == [], "another tool's namespaces are in /run/netns"
        mounts.unmount(str(netns_dir))
    assert not mounts.is_mount_point(netns_dir)

    lifecycle.up()
    # The order of the trap: a pod (CoreDNS) had its namespace before the workstation's.
    assert [n for n in network.netns_list() if n.startswith("cni-")]
    assert layout.WORKSTATION_NETNS in network.netns_list()

    lifecycle.down()

    assert lifecycle.traces_left() == []
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False
    )
    assert (listing.returncode, listing.stderr) == (0, "")
    assert [m for m in mounts.mount_points() if m.startswith(f"{netns_dir}/")] == []
    assert not mounts.is_mount_point(netns_dir)
