"""Composition root of the traffic manager."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from kubepresence.manager.core.injection import MANAGER_SERVICE, InjectionSettings
from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import discover
from kubepresence.manager.k8s.observing import observe
from kubepresence.manager.k8s.workloads import Workloads
from kubepresence.manager.net.previewing import PreviewGateway
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.manager.webhook import certificates
from kubepresence.manager.webhook.configuring import install_ca_bundle
from kubepresence.manager.webhook.serving import serve_webhook
from kubepresence.protocol.errors import ConfigError, KubepresenceError
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.transport import close_server, serve_tcp

log = logging.getLogger(__name__)

# Expiry runs at most this often: a session's end is noticed within TTL + this.
EXPIRY_GRANULARITY = 1.0


@dataclass(frozen=True)
class WebhookOptions:
    """Where the admission webhook listens and what it injects."""

    host: str
    port: int
    agent_image: str
    pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    agent_log_level: str = "info"
    agent_resources: Mapping[str, Mapping[str, str]] | None = None  # None: the default


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
        webhook: WebhookOptions | None = None,
        preview_port: int = 0,
        managed_namespaces: tuple[str, ...] = (),
    ) -> None:
        """`preview_port`: where the preview gateway listens (0: no previews);
        `managed_namespaces`: where its watches look (empty: every namespace)."""
        self.host = host
        self.preview_port = preview_port
        self.port = port
        self.namespace = namespace
        self.sessions = SessionRegistry(ttl=session_ttl)
        self.dial_timeout = dial_timeout
        self.idle_timeout = idle_timeout
        self.webhook = webhook
        self.managed_namespaces = managed_namespaces

    async def run(self, supervisor: Supervisor) -> None:
        async with await _api_client() as api:
            network = await discover(api, self.namespace)
            service = ManagerService(
                sessions=self.sessions,
                network=network,
                dial_timeout=self.dial_timeout,
                idle_timeout=self.idle_timeout,
                workloads=Workloads(api, self.namespace),
                preview_base=f"http://{MANAGER_SERVICE}.{self.namespace}:{self.preview_port}"
                if self.preview_port
                else "",
            )
            # The webhook first: once the gRPC port answers (the readiness probe), the CA
            # is in place and injection works.
            runner = previews = None
            if self.webhook is not None:
                try:
                    runner = await self._start_webhook(api)
                except (KubepresenceError, OSError) as error:
                    # Clients still need the manager; pods pass untouched (fail open).
                    log.error("the agent-injection webhook is off: %s", error)
            if self.preview_port:
                try:
                    previews = await PreviewGateway(service.preview).start(
                        self.host, self.preview_port
                    )
                except OSError as error:
                    raise ConfigError(
                        f"the preview gateway cannot listen on port {self.preview_port}: {error}"
                    ) from error
            try:
                server = await serve_tcp([service], self.host, self.port)
                supervisor.spawn(self._expire_sessions(service), name="session-expiry")
                # Agent pods, nodes, workloads: stopped here, before the API client closes.
                watching = supervisor.spawn(
                    observe(api, service, self.managed_namespaces), name="cluster-watches"
                )
                try:
                    await supervisor.stopping.wait()
                finally:
                    watching.cancel()
                    await close_server(server)
            finally:
                if runner is not None:
                    await runner.cleanup()
                if previews is not None:
                    await previews.cleanup()

    async def _start_webhook(self, api: client.ApiClient) -> web.AppRunner:
        assert self.webhook is not None
        options = self.webhook
        certificate = certificates.generate(
            MANAGER_SERVICE, self.namespace, datetime.datetime.now(datetime.UTC)
        )
        await install_ca_bundle(api, self.namespace, certificate.ca_pem)
        settings = InjectionSettings(
            agent_image=options.agent_image,
            manager_namespace=self.namespace,
            pull_policy=options.pull_policy,
            image_pull_secrets=options.image_pull_secrets,
            log_level=options.agent_log_level,
            **({"agent_resources": options.agent_resources} if options.agent_resources else {}),
        )
        return await serve_webhook(
            settings, options.host, options.port, certificates.server_context(certificate)
        )

    async def _expire_sessions(self, service: ManagerService) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expired = self.sessions.expire(loop.time())
            for session in expired:
                log.info("%s session %s (%s) expired", session.kind.value, session.id, session.name)
            # Expired agents leave their workload; expired clients take their intercepts.
            service.forget_sessions(s.id for s in expired)
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
