"""The user daemon's port-forward through the API server, run on the workstation.

Scenarios, each over SPDY/3.1 (what kubectl speaks) and over WebSocket:
- from the workstation (which reaches only the API server), userd's port-forward code
  opens a port-forward to the echo pod and an HTTP request through it gets the pod's
  answer;
- a port-forward to a port nothing listens on fails with one clear cluster error;
- `PortForwardTransport`, the asyncio transport the gRPC channel to the manager runs on,
  carries a protocol's request and the pod's answer, twice (each on its own connection),
  and tells the protocol once the pod side ended;
- 8 MiB sent to a TCP echo pod while its echo is read come back whole and in order (data
  split across many frames, the reader falling behind the writer);
- `auto` (the default) picks SPDY on this cluster.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from kpcluster import layout
from kpcluster.harness import Cluster

SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, json, os, sys
    import uvloop
    from pathlib import Path
    from kubepresence.protocol.errors import KubepresenceError
    from kubepresence.userd.k8s.apiclient import load_configuration, websocket_client
    from kubepresence.userd.k8s.portforward_channel import PortForwardTransport
    from kubepresence.userd.k8s.portforwarding import PortForwarder

    NS, POD, PORT, BAD_PORT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    TCP_POD, TCP_PORT, PROTOCOL = sys.argv[6], int(sys.argv[7]), sys.argv[8]
    REQUEST = b"GET /pf-check HTTP/1.1\\r\\nHost: echo\\r\\nConnection: close\\r\\n\\r\\n"
    BULK = os.urandom(8 * 1024 * 1024)

    class Asking(asyncio.Protocol):
        def __init__(self):
            self.answer = b""
            self.lost = []
        def connection_made(self, transport):
            transport.write(REQUEST)
        def data_received(self, data):
            self.answer += data
        def connection_lost(self, error):
            self.lost.append(error)

    async def echo_bulk(stream):
        async def send():
            for at in range(0, len(BULK), 200_000):
                await stream.send(BULK[at : at + 200_000])
        sending = asyncio.create_task(send())
        echoed = hashlib.sha256()
        size = 0
        while size < len(BULK):
            chunk = await stream.receive()
            if chunk is None:
                break
            echoed.update(chunk)
            size += len(chunk)
            if size < 2 * 1024 * 1024:
                await asyncio.sleep(0.001)  # a slow reader at first: the writer runs ahead
        await sending
        return [size, echoed.hexdigest() == hashlib.sha256(BULK).hexdigest()]

    async def main():
        api = websocket_client(await load_configuration(Path(sys.argv[5])))
        result = {}
        async with api:
            forwarder = PortForwarder(api, NS, POD, PORT, PROTOCOL)
            async with forwarder.open() as stream:
                await stream.send(REQUEST)
                answer = b""
                while (chunk := await stream.receive()) is not None:
                    answer += chunk
                    if b"\\r\\n\\r\\n" in answer and answer.rstrip().endswith(b"}"):
                        break
            result["direct"] = answer.decode()
            result["protocol"] = forwarder.protocol
            try:
                async with PortForwarder(api, NS, POD, BAD_PORT, PROTOCOL).open() as stream:
                    await stream.send(b"x")
                    await stream.receive()
                result["bad_port"] = "no error"
            except KubepresenceError as error:
                result["bad_port"] = [error.category.value, error.message]
            answers = []
            for _ in range(2):
                async with forwarder.open() as stream:
                    asking = Asking()
                    transport = PortForwardTransport(stream, asking)
                    asking.connection_made(transport)
                    await asyncio.wait_for(transport.pump(), 20)
                answers.append([asking.answer.decode(), len(asking.lost)])
            result["transport"] = answers
            async with PortForwarder(api, NS, TCP_POD, TCP_PORT, PROTOCOL).open() as stream:
                result["bulk"] = await asyncio.wait_for(echo_bulk(stream), 60)
        print(json.dumps(result))

    uvloop.run(main())  # as userd runs
    """
)


def _body(http_answer: str) -> dict[str, object]:
    head, _, body = http_answer.partition("\r\n\r\n")
    status_line = head.splitlines()[0]
    assert status_line.startswith("HTTP/1."), head
    assert " 200 " in status_line, head
    return dict(json.loads(body))


@pytest.mark.parametrize("protocol", ["spdy", "websocket", "auto"])
def test_userd_portforward_from_the_workstation(
    cluster: Cluster, namespace: str, protocol: str
) -> None:
    echo = cluster.deploy_echo("http", namespace)
    tcp_echo = cluster.deploy_echo("tcp", namespace)
    result = cluster.on_workstation(
        [
            sys.executable,
            "-c",
            SCRIPT,
            namespace,
            echo.pod_name,
            str(echo.pod_port),
            "9",
            str(layout.WORKSTATION_KUBECONFIG),
            tcp_echo.pod_name,
            str(tcp_echo.pod_port),
            protocol,
        ],
        timeout=180,
    )
    data = json.loads(result.stdout)
    assert data["protocol"] == ("spdy" if protocol == "auto" else protocol)
    direct = _body(data["direct"])
    assert direct["path"] == "/pf-check"
    assert direct["pod"] == echo.pod_name
    category, message = data["bad_port"]
    assert category == "cluster"
    assert "9" in message
    for answer, times_lost in data["transport"]:
        assert _body(answer)["pod"] == echo.pod_name
        assert times_lost == 1
    assert data["bulk"] == [8 * 1024 * 1024, True]
