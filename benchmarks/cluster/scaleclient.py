"""Simulated clients and agents for the manager-at-scale benchmark, run in a cluster pod.

`python3 scaleclient.py echo PORT` serves TCP echo (stdlib asyncio, a deep backlog, many
connections): the destination of every flow.

`python3 scaleclient.py sessions SPEC` (SPEC: JSON, see `Spec`) speaks the real Manager
protocol straight to the manager pod's gRPC port, as userd and the agent do, one HTTP/2
connection per session:
- one simulated agent per workload: ArriveAsAgent, Remain every 5 s, WatchIntercepts of its
  workload, and ReviewIntercept ACTIVE for each intercept it sees waiting;
- each client session: ArriveAsClient, Remain every 5 s, WatchIntercepts and WatchDials
  held open, at most one global intercept (CreateIntercept, then waits until the watch
  shows it ACTIVE), and its share of DialCluster flows to the echo server, held open,
  each sending a keep-alive request (PAYLOAD bytes, echoed back) every
  `background_interval` seconds from a random start.
Once everything is set up it prints {"event": "ready", ...}. With `probe_dials` or
`probe_requests`, it then times, one at a time with a pause between them, new dials (open
sent → CONNECTED received; the flow is then closed) and keep-alive requests on its held
flows (round robin), and prints {"event": "measured", ...}. Then it holds everything until
its stdin ends (or `hold` seconds pass), departs and prints {"event": "done", ...}.
Samples are milliseconds; errors are counted by kind, never retried.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

PAYLOAD = b"k" * 64
REMAIN_INTERVAL = 5.0  # as userd and the agent
CALL_TIMEOUT = 10.0
PROBE_PAUSE = 0.01
ARRIVING_AT_ONCE = 20


def say(event: str, **what: object) -> None:
    print(json.dumps({"event": event, **what}), flush=True)


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- echo ---------------------------------------------------------------------------------


async def echo(port: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    raise_file_limit()
    # A pod's own address, every interface of its network namespace.
    server = await asyncio.start_server(serve, "0.0.0.0", port, backlog=4096)  # noqa: S104
    say("ready", port=port)
    async with server:
        await server.serve_forever()


# --- sessions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    manager_host: str
    manager_port: int
    echo_host: str
    echo_port: int
    namespace: str  # of the workloads
    name: str  # prefix of the client names
    sessions: int
    flows: int  # in total, spread evenly over the sessions
    workloads: list[str]  # one agent and one intercept (of one client) each
    setup_deadline: float
    background_interval: float
    probe_dials: int = 0
    probe_requests: int = 0
    probe_deadline: float = 60.0
    hold: float = 600.0
    idle_timeout: float = 900.0  # asked of the manager for each flow


@dataclass
class Tally:
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    setup_dial_ms: list[float] = field(default_factory=list)
    active_ms: list[float] = field(default_factory=list)
    background_requests: int = 0

    def failed(self, kind: str, error: BaseException) -> None:
        self.errors[f"{kind}: {type(error).__name__}"] += 1


class ProtocolBreachError(Exception):
    """The manager answered something other than the flow protocol expects."""


class Flow:
    """One DialCluster tunnel to the echo server, connected."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lock = asyncio.Lock()

    async def request(self) -> float:
        """One keep-alive request: PAYLOAD out, echoed back; its round trip in ms."""
        from kubepresence.protocol.gen import common

        async with self.lock:
            started = time.perf_counter()
            await self.stream.send_message(common.TunnelMessage(data=PAYLOAD))
            got = 0
            while got < len(PAYLOAD):
                message = await self.stream.recv_message()
                if message is None or message.data is None:
                    raise ProtocolBreachError(f"echo answered {message!r}")
                got += len(message.data)
            return (time.perf_counter() - started) * 1000


class Sessions:
    def __init__(self, spec: Spec) -> None:
        from kubepresence.protocol.gen import common

        self.spec = spec
        self.tally = Tally()
        self.flows: list[Flow] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.channels: list[Any] = []
        self.arrived: list[tuple[Any, str]] = []  # (channel, session id) of every session
        self.clients: list[tuple[Any, str]] = []  # ... of the client sessions
        self.connection = common.ConnectionId(
            protocol=common.Protocol.TCP,
            destination_ip=ipaddress.ip_address(spec.echo_host).packed,
            destination_port=spec.echo_port,
        )
        self.arriving = asyncio.Semaphore(ARRIVING_AT_ONCE)
        self.ready_parts = 0
        self.parts = spec.sessions + len(spec.workloads)
        self.all_ready = asyncio.Event()

    def _channel(self) -> Any:
        from kubepresence.protocol.transport import tcp_channel

        channel = tcp_channel(self.spec.manager_host, self.spec.manager_port)
        self.channels.append(channel)
        return channel

    def _part_ready(self) -> None:
        self.ready_parts += 1
        if self.ready_parts == self.parts:
            self.all_ready.set()

    async def run(self) -> None:
        spec = self.spec
        per_session = [spec.flows // spec.sessions] * spec.sessions
        for i in range(spec.flows % spec.sessions):
            per_session[i] += 1
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            self.group = group
            for index, workload in enumerate(spec.workloads):
                self._start(self.agent(index, workload), f"agent-{workload}")
            for index in range(spec.sessions):
                owned = spec.workloads[index] if index < len(spec.workloads) else None
                self._start(self.client(index, per_session[index], owned), f"client-{index}")
            try:
                async with asyncio.timeout(spec.setup_deadline):
                    await self.all_ready.wait()
            except TimeoutError:
                self.tally.errors["setup: not ready within the deadline"] += 1
            say(
                "ready",
                setup_s=round(time.monotonic() - started, 2),
                parts_ready=self.ready_parts,
                parts=self.parts,
                flows_open=len(self.flows),
                setup_dial_ms=[round(s, 3) for s in self.tally.setup_dial_ms],
                intercept_active_ms=[round(s, 3) for s in self.tally.active_ms],
                errors=dict(self.tally.errors),
            )
            if spec.probe_dials or spec.probe_requests:
                await self.probe()
            await self.hold()
            for task in self.tasks:
                task.cancel()
        await self.depart()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        say(
            "done",
            background_requests=self.tally.background_requests,
            errors=dict(self.tally.errors),
            client_cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
            client_rss_peak_mib=round(usage.ru_maxrss / 1024, 1),
        )

    def _start(self, coroutine: Any, name: str) -> None:
        self.tasks.append(self.group.create_task(coroutine, name=name))

    async def remain(self, stub: Any, session_id: str) -> None:
        from kubepresence.protocol.gen import common

        while True:
            await asyncio.sleep(REMAIN_INTERVAL)
            try:
                await stub.remain(common.SessionInfo(session_id=session_id))
            except Exception as error:  # noqa: BLE001 (counted; the next one may pass)
                self.tally.failed("remain", error)

    async def agent(self, index: int, workload: str) -> None:
        from kubepresence.protocol.gen import common, manager

        spec = self.spec
        channel = self._channel()
        stub = manager.ManagerStub(channel, timeout=CALL_TIMEOUT)
        watch_stub = manager.ManagerStub(channel)
        async with self.arriving:
            try:
                info = await stub.arrive_as_agent(
                    common.AgentInfo(
                        pod_name=f"{workload}-simulated",
                        namespace=spec.namespace,
                        pod_ip=os.environ.get("POD_IP", "127.0.0.1"),
                        workload_name=workload,
                        workload_kind=common.WorkloadKind.DEPLOYMENT,
                        container="app",
                        ports=[
                            common.ContainerPort(
                                name="http", port=8080, protocol=common.Protocol.TCP
                            )
                        ],
                        version="bench",
                    )
                )
            except Exception as error:  # noqa: BLE001 (counted: this agent is missing)
                self.tally.failed("arrive as agent", error)
                return
        self.arrived.append((channel, info.session_id))
        self._start(self.remain(stub, info.session_id), f"remain-agent-{index}")
        self._part_ready()
        reviewed: set[str] = set()
        try:
            async for snapshot in watch_stub.watch_intercepts(
                common.SessionInfo(session_id=info.session_id)
            ):
                for intercept in snapshot.intercepts:
                    if intercept.id in reviewed or intercept.state != common.InterceptState.WAITING:
                        continue
                    reviewed.add(intercept.id)
                    await stub.review_intercept(
                        manager.ReviewInterceptRequest(
                            session=common.SessionInfo(session_id=info.session_id),
                            intercept_id=intercept.id,
                            disposition=manager.Disposition.ACTIVE,
                        )
                    )
        except Exception as error:  # noqa: BLE001 (counted: the agent's watch ended)
            self.tally.failed("agent watch", error)

    async def client(self, index: int, flows: int, workload: str | None) -> None:
        from kubepresence.protocol.gen import common, manager

        spec = self.spec
        channel = self._channel()
        stub = manager.ManagerStub(channel, timeout=CALL_TIMEOUT)
        watch_stub = manager.ManagerStub(channel)
        async with self.arriving:
            try:
                info = await stub.arrive_as_client(
                    manager.ClientInfo(name=f"{spec.name}-{index}@bench", version="bench")
                )
            except Exception as error:  # noqa: BLE001 (counted: this session is missing)
                self.tally.failed("arrive as client", error)
                return
        session = common.SessionInfo(session_id=info.session_id)
        self.arrived.append((channel, info.session_id))
        self.clients.append((channel, info.session_id))
        self._start(self.remain(stub, info.session_id), f"remain-client-{index}")
        self._start(self.watch_dials(watch_stub, session), f"dials-{index}")
        active = asyncio.Event()
        self._start(self.watch_intercepts(watch_stub, session, active), f"intercepts-{index}")
        opened = 0
        for flow in range(flows):
            if await self.hold_flow(channel, info.session_id, f"{index}-{flow}"):
                opened += 1
        if workload is not None:
            created = time.perf_counter()
            try:
                await stub.create_intercept(
                    manager.InterceptRequest(
                        session=session,
                        spec=common.InterceptSpec(
                            name=f"bench-{workload}",
                            namespace=spec.namespace,
                            workload_name=workload,
                            service_port="http",
                            local_host="127.0.0.1",
                            local_port=8080,
                        ),
                    )
                )
                async with asyncio.timeout(spec.setup_deadline):
                    await active.wait()
                self.tally.active_ms.append((time.perf_counter() - created) * 1000)
            except Exception as error:  # noqa: BLE001 (counted: the intercept is missing)
                self.tally.failed("intercept", error)
                return
        if opened == flows:
            self._part_ready()

    async def watch_dials(self, stub: Any, session: Any) -> None:
        try:
            async for _ in stub.watch_dials(session):
                pass  # keep-alives only: nothing is intercepted for real
        except Exception as error:  # noqa: BLE001 (counted: the watch ended)
            self.tally.failed("watch dials", error)

    async def watch_intercepts(self, stub: Any, session: Any, active: asyncio.Event) -> None:
        from kubepresence.protocol.gen import common

        try:
            async for snapshot in stub.watch_intercepts(session):
                states = [i.state for i in snapshot.intercepts]
                if states and all(s == common.InterceptState.ACTIVE for s in states):
                    active.set()
        except Exception as error:  # noqa: BLE001 (counted: the watch ended)
            self.tally.failed("watch intercepts", error)

    async def dial(self, stream: Any, session_id: str) -> float:
        """Send the open; the time until CONNECTED, in ms."""
        from kubepresence.protocol.gen import common

        opening = common.TunnelMessage(
            open=common.TunnelOpen(
                session_id=session_id,
                connection=self.connection,
                idle_timeout=timedelta(seconds=self.spec.idle_timeout),
            )
        )
        started = time.perf_counter()
        async with asyncio.timeout(CALL_TIMEOUT):
            await stream.send_message(opening)
            reply = await stream.recv_message()
        took = (time.perf_counter() - started) * 1000
        if reply is None or reply.control is None:
            raise ProtocolBreachError(f"a dial answered {reply!r}")
        if reply.control.code != common.TunnelControlCode.CONNECTED:
            raise ProtocolBreachError(f"dial failed: {reply.control.message}")
        return took

    async def hold_flow(self, channel: Any, session_id: str, name: str) -> bool:
        """Open a flow and leave a task holding it (and sending its background requests);
        True once it is connected."""
        connected: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._start(self._held(channel, session_id, connected), f"flow-{name}")
        return await connected

    async def _held(self, channel: Any, session_id: str, connected: asyncio.Future[bool]) -> None:
        from kubepresence.protocol import streams

        flow: Flow | None = None
        try:
            async with streams.dial_cluster(channel) as stream:
                self.tally.setup_dial_ms.append(await self.dial(stream, session_id))
                flow = Flow(stream)
                self.flows.append(flow)
                connected.set_result(True)
                interval = self.spec.background_interval
                await asyncio.sleep(random.uniform(0, interval))  # noqa: S311 (jitter)
                while True:
                    async with asyncio.timeout(CALL_TIMEOUT):
                        await flow.request()
                    self.tally.background_requests += 1
                    await asyncio.sleep(interval)
        except Exception as error:  # noqa: BLE001 (counted: this flow is gone)
            self.tally.failed("held flow" if connected.done() else "setup dial", error)
            if not connected.done():
                connected.set_result(False)
            if flow is not None:
                self.flows.remove(flow)

    async def probe_dial(self, channel: Any, session_id: str) -> float:
        from kubepresence.protocol import streams
        from kubepresence.protocol.gen import common
        from kubepresence.protocol.tunnel import control

        async with streams.dial_cluster(channel) as stream:
            took = await self.dial(stream, session_id)
            async with asyncio.timeout(CALL_TIMEOUT):
                await stream.send_message(control(common.TunnelControlCode.WRITE_CLOSED))
                while (message := await stream.recv_message()) is not None:
                    if message.control is not None:
                        break
                await stream.end()
        return took

    async def probe(self) -> None:
        """Dials and keep-alive requests, one at a time, interleaved."""
        spec = self.spec
        dial_ms: list[float] = []
        request_ms: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        if not self.clients:
            say("measured", seconds=0, dial_ms=[], keepalive_ms=[], errors={"no session": 1})
            return
        channel, session_id = self.clients[0]
        steps = max(spec.probe_dials, spec.probe_requests)
        started = time.monotonic()
        try:
            async with asyncio.timeout(spec.probe_deadline):
                for step in range(steps):
                    # Spread the dials evenly among the requests.
                    if len(dial_ms) + errors["dial"] < spec.probe_dials * (step + 1) // steps:
                        try:
                            dial_ms.append(await self.probe_dial(channel, session_id))
                        except Exception:  # noqa: BLE001 (counted)
                            errors["dial"] += 1
                    if step < spec.probe_requests and self.flows:
                        try:
                            async with asyncio.timeout(CALL_TIMEOUT):
                                request_ms.append(
                                    await self.flows[step % len(self.flows)].request()
                                )
                        except Exception:  # noqa: BLE001 (counted)
                            errors["request"] += 1
                    await asyncio.sleep(PROBE_PAUSE)
        except TimeoutError:
            errors["probe deadline"] += 1
        say(
            "measured",
            seconds=round(time.monotonic() - started, 2),
            dial_ms=[round(s, 3) for s in dial_ms],
            keepalive_ms=[round(s, 3) for s in request_ms],
            errors=dict(errors),
        )

    async def hold(self) -> None:
        """Until stdin ends (the benchmark is done with us), at most `hold` seconds."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        try:
            async with asyncio.timeout(self.spec.hold):
                while await reader.read(4096):
                    pass
        except TimeoutError:
            self.tally.errors["hold: stdin did not end"] += 1
        finally:
            transport.close()

    async def depart(self) -> None:
        from kubepresence.protocol.gen import common, manager

        async def leave(channel: Any, session_id: str) -> None:
            try:
                await manager.ManagerStub(channel, timeout=CALL_TIMEOUT).depart(
                    common.SessionInfo(session_id=session_id)
                )
            except Exception as error:  # noqa: BLE001 (counted; the TTL ends it anyway)
                self.tally.failed("depart", error)

        await asyncio.gather(*(leave(c, s) for c, s in self.arrived))
        for channel in self.channels:
            channel.close()


def main() -> None:
    if sys.argv[1] == "echo":
        asyncio.run(echo(int(sys.argv[2])))
        return
    spec = Spec(**json.loads(sys.argv[2]))
    raise_file_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(Sessions(spec).run())
    else:
        uvloop.run(Sessions(spec).run())


if __name__ == "__main__":
    main()
