"""Fixtures for end-to-end tests on the project's local cluster (tests/cluster).

- `cluster` (session): reuses a healthy running cluster, else brings one up; with
  `--cluster-down` it tears the cluster down after the session.
- `namespace`: a fresh namespace per test, deleted afterwards even when the test fails.
- `session` (module): one connected workstation with its own traffic manager.
- A session check that the nft guard's leak counters stayed 0 across the whole suite.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # workstation_cli

from kpcluster import layout, lifecycle, network
from kpcluster.harness import Cluster
from workstation_cli import Session, Workstation, uninstall_manager, ws1_vif_lock

log = logging.getLogger(__name__)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster-down", action="store_true", help="tear the local cluster down after the session"
    )


def _machine_can_run_cluster() -> str | None:
    """The reason this machine cannot run the cluster, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nft, containerd)"
    for tool in ("ip", "nft", "iptables"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    if not Path("/sys/fs/cgroup").is_dir():
        return "needs cgroups mounted at /sys/fs/cgroup"
    return None


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    reason = _machine_can_run_cluster()
    if reason:
        pytest.skip(reason)
    if not lifecycle.is_healthy():
        lifecycle.up()
    counters_before = network.guard_counters()
    handle = Cluster()
    yield handle
    try:
        handle.wait_namespaces_gone()
        # A leak drop means something tried to send lab traffic off the machine (or across
        # the lab LAN): the guard stopped it, but the setup or a test is wrong.
        after = network.guard_counters()
        grown = {
            k: after[k] - counters_before.get(k, 0)
            for k in network.leak_drops(after)
            if after[k] > counters_before.get(k, 0)
        }
        assert not grown, f"nft guard dropped leaking packets during the suite: {grown}"
    finally:
        if request.config.getoption("--cluster-down"):
            lifecycle.down()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    with cluster.namespace(request.node.name) as name:
        yield name


@pytest.fixture
def ws_kubeconfig() -> Path:
    return layout.WORKSTATION_KUBECONFIG


@pytest.fixture
def manager_namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace name for this test's own traffic manager, uninstalled afterwards."""
    name = f"kp-mgr-{secrets.token_hex(3)}"
    yield name
    uninstall_manager(cluster, name)


@pytest.fixture
def workstation(cluster: Cluster, tmp_path: Path) -> Iterator[Workstation]:
    """The kubepresence CLI on the workstation, with private dirs; quit afterwards.

    Holds ws1's lock: one kubepresence session at a time there, whoever runs tests."""
    with ws1_vif_lock():
        ws = Workstation(cluster, tmp_path)
        yield ws
        ws.kp("quit", timeout=60)
        for daemon in ("userd", "rootd"):
            socket = tmp_path / "run" / "kubepresence" / f"{daemon}.socket"
            assert not socket.exists(), f"{daemon} still serves {socket} after quit"


@pytest.fixture(scope="module")
def session(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """One connected workstation (own traffic manager) for a whole test module."""
    with ws1_vif_lock():
        ws = Workstation(cluster, tmp_path_factory.mktemp("ws"))
        manager_namespace = f"kp-mgr-{secrets.token_hex(3)}"
        try:
            connected = ws.kp("connect", "--manager-namespace", manager_namespace)
            assert connected.returncode == 0, connected.stderr + ws.log("userd")
            yield Session(ws, manager_namespace)
        finally:
            ws.kp("quit", timeout=60)
            uninstall_manager(cluster, manager_namespace)
