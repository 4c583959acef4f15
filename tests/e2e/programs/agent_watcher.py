"""A traffic-manager client on the workstation for test_injection, through userd's own
port-forward code: arrives as a client and prints one JSON line per WatchAgents snapshot
({"t", "agents"}); given NS/WORKLOAD/PORT, it creates that intercept first and follows
WatchIntercepts instead ({"t", "intercepts"}). The first line is {"t", "session"}.

Usage: agent_watcher.py MANAGER_NAMESPACE KUBECONFIG [NS/WORKLOAD/PORT]. Runs until
stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from kubernetes_asyncio import client

from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.transport import CONFIGURATION
from kubepresence.userd.k8s.apiclient import load_configuration, websocket_client
from kubepresence.userd.k8s.portforward import PortForwarder
from kubepresence.userd.k8s.portforward_grpc import PortForwardChannel


def say(**what: object) -> None:
    print(json.dumps({"t": time.time(), **what}), flush=True)


def intercept_line(intercept: common.InterceptInfo) -> dict[str, str]:
    assert intercept.spec is not None
    return {
        "name": intercept.spec.name,
        "state": intercept.state.name,
        "message": intercept.message,
    }


async def main(ns: str, kubeconfig: str, intercept: str) -> None:
    conf = await load_configuration(Path(kubeconfig))
    async with client.ApiClient(conf) as api:
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            ns, label_selector="app.kubernetes.io/name=kubepresence-manager"
        )
    ready = [
        p.metadata.name
        for p in pods.items
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    ]
    async with websocket_client(conf) as ws:
        forwarder = PortForwarder(ws, ns, ready[0], 8081)
        channel = PortForwardChannel(forwarder, CONFIGURATION)
        listening = asyncio.Event()
        background = [asyncio.create_task(channel.run(listening))]  # lives with the program
        await asyncio.wait_for(listening.wait(), 10)
        calls = manager.ManagerStub(channel, timeout=10)
        session = await calls.arrive_as_client(manager.ClientInfo(name="e2e@watcher"))
        say(session=session.session_id)

        async def remain() -> None:
            while True:
                await asyncio.sleep(2)  # the session's keep-alive, well inside its TTL
                await calls.remain(session)

        background.append(asyncio.create_task(remain()))
        if intercept:  # NS/WORKLOAD/PORT: create it, then follow the intercepts
            namespace, workload, port = intercept.split("/")
            await calls.create_intercept(
                manager.InterceptRequest(
                    session=session,
                    spec=common.InterceptSpec(
                        name="e2e",
                        namespace=namespace,
                        workload_name=workload,
                        service_port=port,
                        local_port=9,
                    ),
                )
            )
            async for snapshot in manager.ManagerStub(channel).watch_intercepts(session):
                say(intercepts=[intercept_line(i) for i in snapshot.intercepts])
        watch = manager.ManagerStub(channel).watch_agents(session).__aiter__()
        while True:
            # The manager sends a snapshot at least every 10 s.
            agents = await asyncio.wait_for(anext(watch), 30)
            say(
                agents=[
                    {
                        "pod": a.pod_name,
                        "namespace": a.namespace,
                        "ip": a.pod_ip,
                        "workload": [a.workload_kind.name, a.workload_name],
                        "container": a.container,
                        "version": a.version,
                        "ports": [[p.name, p.port, p.agent_port, p.redirected] for p in a.ports],
                        "environment": dict(a.environment),
                    }
                    for a in agents.agents
                ]
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""))
