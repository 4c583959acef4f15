"""The Manager service: what clients and agents call."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import Any

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from kubepresence.manager.core.addresses import destination
from kubepresence.manager.core.agents import AgentTable
from kubepresence.manager.core.dns import BadQuestionError
from kubepresence.manager.core.loglevels import ClusterLogLevel
from kubepresence.manager.core.previews import Preview
from kubepresence.manager.core.sessions import Session, SessionKind, SessionRegistry
from kubepresence.manager.flows.egress import EgressDesk
from kubepresence.manager.flows.handovers import HandOverDesk
from kubepresence.manager.k8s.discovery import ClusterNetwork
from kubepresence.manager.k8s.workloads import Workloads
from kubepresence.manager.net import resolving
from kubepresence.manager.rpc.interceptdesk import InterceptDesk
from kubepresence.protocol import dialing, streams, version_of, wire
from kubepresence.protocol.agents import Agent
from kubepresence.protocol.errors import KubepresenceError, UserError
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.logs import set_level_for

log = logging.getLogger(__name__)

# A watch sends the current snapshot at least this often (a keep-alive the client can
# time out on) and ends when the watcher's session does.
WATCH_KEEPALIVE = 10.0


DIAL_CLUSTER = "DialCluster"
HAND_OVER = "HandOver"
ANSWER_DIAL = "AnswerDial"


def misfit(rpc: str, open_: common.TunnelOpen) -> str | None:
    """Why this open message does not fit the tunnel RPC it came on; None when it does.

    Each RPC says what it carries (see kubepresence.protocol.streams): DialCluster a flow
    to dial (a TCP or UDP connection, perhaps via a workload), HandOver an intercepted
    connection (its intercept), AnswerDial the answer to a posted dial (its dial id)."""
    if rpc == DIAL_CLUSTER:
        if open_.dial_id or open_.intercept_id:
            return "a DialCluster open names no dial_id or intercept_id"
        if open_.connection is None:
            return "a DialCluster open names the connection to dial"
        if open_.connection.protocol not in (common.Protocol.TCP, common.Protocol.UDP):
            return "a flow is TCP or UDP"
        if bool(open_.via_namespace) != bool(open_.via_workload):
            return "a flow via a workload names its namespace and name"
        return None
    if rpc == HAND_OVER:
        if not open_.intercept_id:
            return "a HandOver open names its intercept_id"
        if open_.dial_id or open_.via_namespace or open_.via_workload:
            return "a HandOver open names no dial_id or via_workload"
        return None
    if rpc == ANSWER_DIAL:
        if not open_.dial_id:
            return "an AnswerDial open names its dial_id"
        if open_.intercept_id or open_.via_namespace or open_.via_workload:
            return "an AnswerDial open names no intercept_id or via_workload"
        return None
    raise ValueError(f"no tunnel RPC {rpc}")


def encoded_connection(connection: common.ConnectionId | None) -> bytes:
    """A connection as the flow shells pass it on: wire-encoded, unread."""
    return bytes(connection) if connection is not None else b""


def unwire(connection: bytes) -> common.ConnectionId | None:
    return common.ConnectionId.parse(connection) if connection else None


async def opening(stream: Stream[Any, Any], rpc: str) -> common.TunnelMessage:
    """The tunnel's first message, an open that fits `rpc`; INVALID_ARGUMENT otherwise."""
    first: common.TunnelMessage | None = await stream.recv_message()
    if first is None or first.open is None:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{rpc}: a tunnel starts with an open message")
    problem = misfit(rpc, first.open)
    if problem is not None:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{rpc}: {problem}")
    return first


class ManagerService(manager.ManagerBase):
    def __init__(
        self,
        *,
        sessions: SessionRegistry,
        network: ClusterNetwork,
        dial_timeout: float,
        idle_timeout: float,
        workloads: Workloads | None = None,
        preview_base: str = "",
    ) -> None:
        self._sessions = sessions
        self._workloads = workloads
        self._desk = InterceptDesk(preview_base=preview_base)
        self._hand_overs = HandOverDesk(now=self._now, dial_timeout=dial_timeout)
        self._egress = EgressDesk(now=self._now, dial_timeout=dial_timeout)
        self._agent_workloads: set[tuple[str, str]] = set()
        self._agents = AgentTable()
        self._agents_changed = asyncio.Event()
        self._log_level = ClusterLogLevel()
        self._log_level_changed = asyncio.Event()
        self._terminating_pods: set[tuple[str, str]] = set()
        self._counts = manager.FlowCounts()
        self._network = network
        self._dial_timeout = dial_timeout
        self._idle_timeout = idle_timeout

    def preview(self, token: str) -> Preview | None:
        """The preview a gateway request names (by its token), if its intercept lives."""
        return self._desk.previews.get(token)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _session_info(self, session: Session) -> common.SessionInfo:
        return common.SessionInfo(session_id=session.id, cluster_id=self._network.cluster_id)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        mapping[streams.DIAL_CLUSTER_PATH] = streams.tunnel_handler(self._dial_cluster)
        mapping[streams.HAND_OVER_PATH] = streams.tunnel_handler(self._hand_over)
        mapping[streams.ANSWER_DIAL_PATH] = streams.tunnel_handler(self._answer_dial)
        return mapping

    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        return common.VersionInfo(name="manager", version=version_of("kubepresence-manager"))

    async def get_cluster_info(self, message: protobuf.Empty) -> common.ClusterInfo:
        net = self._network
        return common.ClusterInfo(
            pod_subnets=net.pod_subnets,
            service_subnets=net.service_subnets,
            cluster_domain=net.cluster_domain,
            dns_service_ip=net.dns_service_ip,
            manager_version=version_of("kubepresence-manager"),
        )

    async def arrive_as_client(self, message: manager.ClientInfo) -> common.SessionInfo:
        session = Session(
            id=f"client-{uuid.uuid4()}",
            kind=SessionKind.CLIENT,
            name=message.name,
            version=message.version,
            details={"install_id": message.install_id},
        )
        self._sessions.arrive(session, self._now())
        log.info("client %s (%s) arrived: %s", session.name, session.version, session.id)
        return self._session_info(session)

    async def arrive_as_agent(self, message: common.AgentInfo) -> common.SessionInfo:
        agent = wire.agent_from_message(message)
        if not agent.pod_name or not agent.namespace:
            raise UserError("an agent names its pod and namespace")
        if agent.pod in self._terminating_pods:
            raise UserError(f"pod {agent.namespace}/{agent.pod_name} is terminating")
        session = Session(
            id=f"agent-{uuid.uuid4()}",
            kind=SessionKind.AGENT,
            name=agent.pod_name,
            namespace=agent.namespace,
            version=agent.version,
            details={"workload": f"{agent.workload_kind}/{agent.workload_name}"},
        )
        self._sessions.arrive(session, self._now())
        replaced = self._agents.arrive(session.id, agent)
        if replaced is not None:
            self._sessions.depart(replaced)
            self._egress.agent_gone(replaced)
        self._notify_agents()
        log.info(
            "agent of %s/%s (%s %s) arrived: %s",
            agent.namespace,
            agent.pod_name,
            agent.workload_kind or "pod",
            agent.workload_name,
            session.id,
        )
        return self._session_info(session)

    def forget_sessions(self, session_ids: Iterable[str]) -> None:
        """Sessions that ended (expired or departed): their agents and intercepts are gone."""
        ids = list(session_ids)
        for session_id in ids:
            if session_id.startswith("client-"):
                self._desk.client_gone(session_id)
                self._hand_overs.client_gone(session_id)
                self._egress.client_gone(session_id)
            else:
                self._egress.agent_gone(session_id)
        if self._agents.depart(ids):
            self._notify_agents()

    # --- what the manager's watches see (k8s.observing) -------------------------------

    def pod_ended(self, namespace: str, pod: str, *, deleted: bool) -> None:
        """An agent's pod is terminating (`deleted`: gone): its agent leaves now rather
        than at its session's expiry; a terminating pod's agent may not arrive again."""
        if deleted:
            self._terminating_pods.discard((namespace, pod))
        else:
            self._terminating_pods.add((namespace, pod))
        session_id = self._agents.session_of(namespace, pod)
        if session_id is None:
            return
        self._sessions.depart(session_id)
        log.info(
            "agent of %s/%s left: its pod is %s (%s)",
            namespace,
            pod,
            "deleted" if deleted else "terminating",
            session_id,
        )
        self.forget_sessions([session_id])

    def pod_subnets_changed(self, subnets: list[str]) -> None:
        """The nodes' pod CIDRs changed: clients that ask from now on get these."""
        if subnets and subnets != self._network.pod_subnets:
            log.info("pod subnets: %s (were %s)", subnets, self._network.pod_subnets)
            self._network = dataclasses.replace(self._network, pod_subnets=subnets)

    def workload_deleted(self, namespace: str, name: str) -> None:
        """Intercepts of a deleted workload go to ERROR ("workload deleted")."""
        self._desk.workload_deleted(namespace, name)

    def _notify_agents(self) -> None:
        # Waiters hold the old event; the next change needs a fresh one.
        self._agents_changed.set()
        self._agents_changed = asyncio.Event()
        # Intercepts follow the agents of their workload.
        pods: dict[tuple[str, str], set[str]] = {}
        for agent in self._agents.snapshot():
            pods.setdefault((agent.namespace, agent.workload_name), set()).add(agent.pod_name)
        for workload in self._agent_workloads | set(pods):
            self._desk.agents_changed(*workload, pods.get(workload, set()))
        self._agent_workloads = set(pods)

    # --- intercepts -------------------------------------------------------------------

    def _client(self, session_id: str) -> str:
        found = self._sessions.get(session_id)
        if found.kind is not SessionKind.CLIENT:
            raise UserError("only a client may do this")
        return found.id

    def _agent(self, session_id: str) -> Agent:
        agent = self._agents.get(self._sessions.get(session_id).id)
        if agent is None:
            raise UserError("only an agent may do this")
        return agent

    async def create_intercept(self, message: manager.InterceptRequest) -> common.InterceptInfo:
        client = self._client(message.session.session_id if message.session else "")
        spec = message.spec or common.InterceptSpec()
        info = self._desk.create(client, spec)
        if self._workloads is not None and info.state != common.InterceptState.ACTIVE:
            try:
                # Pods without an agent get one: the template annotation rolls them.
                # A port given by number is one that Services target by number (the
                # client resolved it): only a redirect takes it over.
                numeric = int(spec.service_port) if spec.service_port.isdigit() else None
                await self._workloads.ensure_injected(spec.namespace, spec.workload_name, numeric)
            except KubepresenceError:
                self._desk.remove(client, spec.name or spec.workload_name)
                raise
        return info

    async def remove_intercept(self, message: manager.RemoveInterceptRequest) -> protobuf.Empty:
        self._desk.remove(
            self._client(message.session.session_id if message.session else ""), message.name
        )
        return protobuf.Empty()

    async def watch_intercepts(
        self, message: common.SessionInfo
    ) -> AsyncIterator[manager.InterceptSnapshot]:
        """A client's intercepts, or an agent's workload's, now and after every change."""
        session = self._sessions.get(message.session_id)
        if session.kind is SessionKind.CLIENT:
            snapshots = self._desk.watch_client(session.id)
        else:
            agent = self._agent(session.id)
            snapshots = self._desk.watch_workload(agent.namespace, agent.workload_name)
        async for intercepts in snapshots:
            yield manager.InterceptSnapshot(intercepts=intercepts)
            self._sessions.get(message.session_id)  # the watch ends with the session

    async def review_intercept(self, message: manager.ReviewInterceptRequest) -> protobuf.Empty:
        agent = self._agent(message.session.session_id if message.session else "")
        self._desk.review(
            message.intercept_id,
            agent.pod_name,
            message.disposition == manager.Disposition.ACTIVE,
            message.message,
            dict(message.environment) or dict(agent.environment),
            export=(agent.pod_ip, agent.sftp_port) if agent.pod_ip and agent.sftp_port else None,
        )
        return protobuf.Empty()

    async def watch_dials(self, message: common.SessionInfo) -> AsyncIterator[common.DialRequest]:
        client = self._client(message.session_id)
        async for posted in self._hand_overs.watch(client):
            if posted is None:
                yield common.DialRequest()  # keep-alive: an empty dial id
            else:
                yield common.DialRequest(
                    dial_id=posted.dial_id,
                    intercept_id=posted.intercept_id,
                    connection=unwire(posted.connection),
                    local_host=posted.local_host,
                    local_port=posted.local_port,
                )
            self._sessions.get(client)

    async def watch_egress_dials(
        self, message: common.SessionInfo
    ) -> AsyncIterator[manager.EgressDial]:
        """The client flows this agent is to dial from its pod (see EgressDesk)."""
        self._agent(message.session_id)
        async for posted in self._egress.watch(message.session_id):
            if posted is None:
                yield manager.EgressDial()  # keep-alive: an empty dial id
            else:
                yield manager.EgressDial(
                    dial_id=posted.dial_id,
                    connection=unwire(posted.connection),
                    idle_timeout=timedelta(seconds=posted.idle_timeout),
                )
            self._sessions.get(message.session_id)  # the watch ends with the session

    async def get_flow_counts(self, message: protobuf.Empty) -> manager.FlowCounts:
        return manager.FlowCounts(
            client_flows=self._counts.client_flows,
            egress_flows=self._counts.egress_flows,
            hand_overs=self._counts.hand_overs,
        )

    async def set_log_level(self, message: common.LogLevelRequest) -> protobuf.Empty:
        try:
            set_level_for(message.level, message.duration_seconds)
        except ValueError as error:
            raise UserError(str(error)) from error
        log.info(
            "log level %s%s, for the manager and its agents",
            message.level,
            f" for {message.duration_seconds} s" if message.duration_seconds else "",
        )
        self._log_level.set(message.level, message.duration_seconds, self._now())
        changed, self._log_level_changed = self._log_level_changed, asyncio.Event()
        changed.set()
        return protobuf.Empty()

    async def watch_log_level(
        self, message: common.SessionInfo
    ) -> AsyncIterator[common.LogLevelRequest]:
        """An agent's level: the one in force when it starts watching, then every change."""
        self._agent(message.session_id)
        seen = -1
        while True:
            changed = self._log_level_changed  # taken first: no change is missed
            if self._log_level.changes != seen:
                seen = self._log_level.changes
                level = self._log_level.in_force(self._now())
                if level is not None:
                    yield common.LogLevelRequest(
                        level=level.level, duration_seconds=math.ceil(level.seconds_left)
                    )
            await changed.wait()
            self._sessions.get(message.session_id)  # the watch ends with the session

    async def watch_agents(
        self, message: common.SessionInfo
    ) -> AsyncIterator[manager.AgentSnapshot]:
        """The present agents now and after every change (at least every 10 s)."""
        self._sessions.get(message.session_id)  # only sessions may watch
        while True:
            changed = self._agents_changed  # taken before the yield: no change is missed
            yield manager.AgentSnapshot(
                agents=[wire.agent_to_message(a) for a in self._agents.snapshot()]
            )
            try:
                async with asyncio.timeout(WATCH_KEEPALIVE):
                    await changed.wait()
            except TimeoutError:
                pass  # keep-alive: the same snapshot again
            # The watch lives as long as the watcher's session.
            self._sessions.get(message.session_id)

    async def remain(self, message: common.SessionInfo) -> protobuf.Empty:
        self._sessions.remain(message.session_id, self._now())
        return protobuf.Empty()

    async def depart(self, message: common.SessionInfo) -> protobuf.Empty:
        session = self._sessions.depart(message.session_id)
        if session is not None:
            log.info("%s %s departed: %s", session.kind.value, session.name, session.id)
            self.forget_sessions([session.id])
        return protobuf.Empty()

    async def lookup_dns(self, message: common.DnsRequest) -> common.DnsResponse:
        self._sessions.remain(message.session_id, self._now())
        try:
            rcode, answers = await resolving.resolve(
                self._network.dns_service_ip, message.name, message.qtype
            )
        except BadQuestionError as error:
            raise UserError(str(error)) from error
        return common.DnsResponse(rcode=rcode, answers=answers)

    # --- flow streams (the words: the kubepresence.protocol docstring) ---------------

    async def _dial_cluster(self, stream: Stream[Any, Any]) -> None:
        """DialCluster: a client's flow, dialled here or by an agent of via_workload."""
        first = await opening(stream, DIAL_CLUSTER)
        assert first.open is not None
        assert first.open.connection is not None
        conn = first.open.connection
        try:
            host, port = destination(conn.destination_ip, conn.destination_port)
        except ValueError as error:
            raise GRPCError(Status.INVALID_ARGUMENT, str(error)) from error
        idle = self._idle_timeout
        if first.open.idle_timeout is not None and first.open.idle_timeout.total_seconds() > 0:
            idle = first.open.idle_timeout.total_seconds()
        if first.open.via_workload or first.open.via_namespace:
            self._counts.egress_flows += 1
            await self._egress_flow(stream, first, idle)
            return
        self._counts.client_flows += 1
        await self._own_flow(stream, host, port, conn.protocol == common.Protocol.UDP, idle)

    async def _hand_over(self, stream: Stream[Any, Any]) -> None:
        """HandOver: an agent hands over an intercepted connection to its client."""
        first = await opening(stream, HAND_OVER)
        assert first.open is not None
        self._agent(first.open.session_id)
        intercept = self._desk.active(first.open.intercept_id)
        self._counts.hand_overs += 1
        await self._hand_overs.agent_tunnel(
            stream, first.open.session_id, intercept, encoded_connection(first.open.connection)
        )

    async def _answer_dial(self, stream: Stream[Any, Any]) -> None:
        """AnswerDial: the answer to a dial posted to an agent (egress) or a client."""
        first = await opening(stream, ANSWER_DIAL)
        assert first.open is not None
        session = self._sessions.get(first.open.session_id)
        if session.kind is SessionKind.AGENT:
            # An agent answers an egress dial: it dialled a client's flow from its pod.
            await self._egress.agent_tunnel(session.id, stream, first.open.dial_id)
        else:
            # A client takes an intercepted connection it was offered.
            await self._hand_overs.client_tunnel(session.id, stream, first.open.dial_id)

    async def _own_flow(
        self, stream: Stream[Any, Any], host: str, port: int, udp: bool, idle: float
    ) -> None:
        """A client's flow that the manager dials itself."""
        flow = await dialing.dial(stream, host, port, udp=udp, dial_timeout=self._dial_timeout)
        if flow is not None:
            await flow.relay(stream, idle_timeout=idle)

    async def _egress_flow(
        self, stream: Stream[Any, Any], first: common.TunnelMessage, idle: float
    ) -> None:
        """A client's flow that leaves the cluster from one of a workload's agents."""
        assert first.open is not None
        client = self._client(first.open.session_id)
        agents = self._agents.sessions_of_workload(
            first.open.via_namespace, first.open.via_workload
        )
        await self._egress.client_tunnel(
            client,
            stream,
            (first.open.via_namespace, first.open.via_workload),
            encoded_connection(first.open.connection),
            agents,
            idle,
        )
