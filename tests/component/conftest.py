"""What several component tests share: a real manager service with no cluster behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import ClusterNetwork
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.transport import serve_unix

# What the manager would discover in a cluster; here there is none.
NETWORK = ClusterNetwork(
    pod_subnets=["10.244.0.0/16"],
    service_subnets=["10.96.0.0/16"],
    cluster_domain="cluster.local",
    dns_service_ip="10.96.0.10",
    cluster_id="test-cluster",
)


@pytest.fixture
def manager_service() -> ManagerService:
    """The manager's gRPC service, not yet served."""
    return ManagerService(
        sessions=SessionRegistry(ttl=30), network=NETWORK, dial_timeout=2.0, idle_timeout=30.0
    )


@pytest.fixture
async def manager_socket(tmp_path: Path, manager_service: ManagerService) -> AsyncIterator[Path]:
    """The manager's gRPC service on a unix socket."""
    path = tmp_path / "manager.socket"
    server = await serve_unix([manager_service], path)
    yield path
    server.close()
    await server.wait_closed()
