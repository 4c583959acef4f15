"""Composition root of the traffic manager."""

from __future__ import annotations

import asyncio
import logging

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import discover
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.errors import ConfigError
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.transport import close_server, serve_tcp

log = logging.getLogger(__name__)

# Expiry runs at most this often: a session's end is noticed within TTL + this.
EXPIRY_GRANULARITY = 1.0


class TrafficManager:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        namespace: str,
        session_ttl: float,
        dial_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self.namespace = namespace
        self.sessions = SessionRegistry(ttl=session_ttl)
        self.dial_timeout = dial_timeout
        self.idle_timeout = idle_timeout

    async def run(self, supervisor: Supervisor) -> None:
        async with await _api_client() as api:
            network = await discover(api, self.namespace)
            service = ManagerService(
                sessions=self.sessions,
                network=network,
                dial_timeout=self.dial_timeout,
                idle_timeout=self.idle_timeout,
            )
            server = await serve_tcp([service], self.host, self.port)
            supervisor.spawn(self._expire_sessions(), name="session-expiry")
            try:
                await supervisor.stopping.wait()
            finally:
                await close_server(server)

    async def _expire_sessions(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for session in self.sessions.expire(loop.time()):
                log.info("%s session %s (%s) expired", session.kind.value, session.id, session.name)
            due = self.sessions.next_expiry()
            wait = EXPIRY_GRANULARITY if due is None else max(due - loop.time(), 0)
            await asyncio.sleep(max(wait, EXPIRY_GRANULARITY))


async def _api_client() -> client.ApiClient:
    """In a pod: its service account; elsewhere (development): the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        try:
            await config.load_kube_config(client_configuration=configuration)
        except (ConfigException, OSError) as error:
            raise ConfigError(
                f"no in-cluster service account and no kubeconfig: {error}"
            ) from error
    return client.ApiClient(configuration)
