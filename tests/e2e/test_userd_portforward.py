"""The user daemon's port-forward through the API server, run on the workstation.

Scenarios, each over SPDY/3.1 (what kubectl speaks) and over WebSocket:
- from the workstation (which reaches only the API server), userd's port-forward code
  opens a port-forward to the echo pod and an HTTP request through it gets the pod's
  answer;
- a port-forward to a port nothing listens on fails with one clear cluster error;
- the asyncio transport the gRPC channel to the manager runs on (`SpdyTransport` straight
  over SPDY, `PortForwardTransport` over WebSocket) carries a protocol's request and the
  pod's answer, twice (each on its own connection), and tells the protocol once the pod
  side ended;
- 8 MiB written at once into that transport to a TCP echo pod come back whole and in
  order (split into many frames, the socket pushing back on the writer);
- `auto` (the default) picks SPDY on this cluster; behind a proxy that refuses SPDY
  upgrades it falls back to WebSocket and keeps it, and `spdy` alone names the refusal;
- SPDY authenticates with a bearer token (a ServiceAccount's), and a token without the
  right to port-forward gets one clear 403 with the API server's reason.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from kpcluster import layout
from kpcluster.harness import Cluster

# Shared by the scripts below: one HTTP request through a fresh port-forward.
ASK = textwrap.dedent(
    """
    async def ask(forwarder, request):
        async with forwarder.open() as stream:
            await stream.send(request)
            answer = b""
            while (chunk := await stream.receive()) is not None:
                answer += chunk
                if b"\\r\\n\\r\\n" in answer and answer.rstrip().endswith(b"}"):
                    break
        return answer.decode()
    """
)

SCRIPT = ASK + textwrap.dedent(
    """
    import asyncio, hashlib, json, os, sys
    import uvloop
    from pathlib import Path
    from kubepresence.protocol.errors import KubepresenceError
    from kubepresence.userd.k8s.apiclient import load_configuration, websocket_client
    from kubepresence.userd.k8s.portforward_grpc import transport_for
    from kubepresence.userd.k8s.portforward import PortForwarder

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

    class Echoed(asyncio.Protocol):
        # Writes BULK in one go: the transport splits it and the socket pushes back.
        def __init__(self):
            self.digest = hashlib.sha256()
            self.size = 0
            self.done = asyncio.get_running_loop().create_future()
            self.pauses = 0
        def connection_made(self, transport):
            self.transport = transport
            for at in range(0, len(BULK), 200_000):
                transport.write(BULK[at : at + 200_000])
        def pause_writing(self):
            self.pauses += 1
        def resume_writing(self):
            pass
        def data_received(self, data):
            self.digest.update(data)
            self.size += len(data)
            if self.size >= len(BULK) and not self.done.done():
                self.done.set_result(None)
                self.transport.close()
        def connection_lost(self, error):
            if not self.done.done():
                self.done.set_result(None)

    async def echo_bulk(stream):
        echoed = Echoed()
        transport = transport_for(stream, echoed)
        echoed.connection_made(transport)
        await asyncio.wait_for(transport.pump(), 60)
        same = echoed.digest.hexdigest() == hashlib.sha256(BULK).hexdigest()
        return [echoed.size, same, type(transport).__name__]

    async def main():
        api = websocket_client(await load_configuration(Path(sys.argv[5])))
        result = {}
        async with api:
            forwarder = PortForwarder(api, NS, POD, PORT, PROTOCOL)
            result["direct"] = await ask(forwarder, REQUEST)
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
                    transport = transport_for(stream, asking)
                    asking.connection_made(transport)
                    await asyncio.wait_for(transport.pump(), 20)
                answers.append([asking.answer.decode(), len(asking.lost)])
            result["transport"] = answers
            async with PortForwarder(api, NS, TCP_POD, TCP_PORT, PROTOCOL).open() as stream:
                result["bulk"] = await echo_bulk(stream)
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
    transport = "PortForwardTransport" if protocol == "websocket" else "SpdyTransport"
    assert data["bulk"] == [8 * 1024 * 1024, True, transport]


FALLBACK_SCRIPT = ASK + textwrap.dedent(
    """
    import asyncio, json, sys, urllib.parse
    from pathlib import Path
    import uvloop
    from kubepresence.protocol.errors import KubepresenceError
    from kubepresence.userd.k8s.apiclient import load_configuration, websocket_client
    from kubepresence.userd.k8s.portforward import PortForwarder
    from kubepresence.userd.k8s.portforward_spdy import ssl_context

    NS, POD, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
    REQUEST = b"GET /fallback HTTP/1.1\\r\\nHost: echo\\r\\nConnection: close\\r\\n\\r\\n"
    REFUSAL = b"only WebSocket upgrades here"
    seen = []

    async def splice(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def proxy_for(conf, server):
        # A plain-HTTP front for the API server that refuses SPDY upgrades, as some
        # proxies do; it authenticates upstream with the workstation's credentials.
        async def handle(reader, writer):
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            lines = head.lower().split(b"\\r\\n")
            upgrade = [line for line in lines if line.startswith(b"upgrade:")]
            seen.append(upgrade[0].decode() if upgrade else "none")
            if b"spdy" in b"".join(upgrade):
                writer.write(
                    b"HTTP/1.1 400 Bad Request\\r\\nContent-Type: text/plain\\r\\n"
                    + b"Content-Length: %d\\r\\n\\r\\n" % len(REFUSAL) + REFUSAL
                )
                await writer.drain()
                writer.close()
                return
            up_reader, up_writer = await asyncio.open_connection(
                server.hostname, server.port, ssl=ssl_context(conf), server_hostname=server.hostname
            )
            up_writer.write(head)
            await asyncio.gather(splice(reader, up_writer), splice(up_reader, writer))
        return handle

    async def main():
        conf = await load_configuration(Path(sys.argv[4]))
        server = urllib.parse.urlsplit(conf.host)
        proxy = await asyncio.start_server(proxy_for(conf, server), "127.0.0.1", 0)
        conf.host = "http://127.0.0.1:%d" % proxy.sockets[0].getsockname()[1]
        result = {}
        async with websocket_client(conf) as api:
            forwarder = PortForwarder(api, NS, POD, PORT, "auto")
            result["answers"] = [await ask(forwarder, REQUEST), await ask(forwarder, REQUEST)]
            result["protocol"] = forwarder.protocol
            try:
                await ask(PortForwarder(api, NS, POD, PORT, "spdy"), REQUEST)
                result["spdy_only"] = "no error"
            except KubepresenceError as error:
                result["spdy_only"] = [error.category.value, error.message]
        result["upgrades_seen"] = seen
        proxy.close()
        print(json.dumps(result))

    uvloop.run(main())
    """
)


def test_auto_falls_back_to_websocket_where_spdy_is_refused(
    cluster: Cluster, namespace: str
) -> None:
    echo = cluster.deploy_echo("http", namespace)
    result = cluster.on_workstation(
        [
            sys.executable,
            "-c",
            FALLBACK_SCRIPT,
            namespace,
            echo.pod_name,
            str(echo.pod_port),
            str(layout.WORKSTATION_KUBECONFIG),
        ],
        timeout=120,
    )
    data = json.loads(result.stdout)
    for answer in data["answers"]:
        assert _body(answer)["path"] == "/fallback"
    # auto tried SPDY once, took the WebSocket and kept it; spdy alone says why it failed.
    assert data["protocol"] == "websocket"
    assert data["upgrades_seen"] == [
        "upgrade: spdy/3.1",
        "upgrade: websocket",
        "upgrade: websocket",
        "upgrade: spdy/3.1",
    ]
    category, message = data["spdy_only"]
    assert category == "cluster"
    assert "refused: 400 Bad Request: only WebSocket upgrades here" in message


TOKEN_SCRIPT = ASK + textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    import uvloop
    from kubepresence.protocol.errors import KubepresenceError
    from kubepresence.userd.k8s.apiclient import load_configuration, websocket_client
    from kubepresence.userd.k8s.portforward import PortForwarder

    NS, POD, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
    REQUEST = b"GET /token HTTP/1.1\\r\\nHost: echo\\r\\nConnection: close\\r\\n\\r\\n"

    async def ask_as(kubeconfig):
        async with websocket_client(await load_configuration(Path(kubeconfig))) as api:
            try:
                return await ask(PortForwarder(api, NS, POD, PORT, "spdy"), REQUEST)
            except KubepresenceError as error:
                return [error.category.value, error.message]

    async def main():
        print(json.dumps([await ask_as(sys.argv[4]), await ask_as(sys.argv[5])]))

    uvloop.run(main())
    """
)


def _token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", account, "-n", namespace).strip()
    config = yaml.safe_load(layout.WORKSTATION_KUBECONFIG.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def test_spdy_authenticates_with_a_bearer_token(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # Tokens are what most managed clusters hand out (exec plugins, service accounts).
    echo = cluster.deploy_echo("http", namespace)
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]},
    ]
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}
            for meta in (
                {"name": "forwarder", "namespace": namespace},
                {"name": "onlooker", "namespace": namespace},
            )
        ]
        + [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "forwarder", "namespace": namespace},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "forwarder", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "forwarder",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "forwarder", "namespace": namespace}
                ],
            },
        ]
    )
    allowed = _token_kubeconfig(cluster, namespace, "forwarder", tmp_path / "forwarder.conf")
    refused = _token_kubeconfig(cluster, namespace, "onlooker", tmp_path / "onlooker.conf")
    result = cluster.on_workstation(
        [
            sys.executable,
            "-c",
            TOKEN_SCRIPT,
            namespace,
            echo.pod_name,
            str(echo.pod_port),
            str(allowed),
            str(refused),
        ],
        timeout=120,
    )
    answer, refusal = json.loads(result.stdout)
    assert _body(answer)["path"] == "/token"
    category, message = refusal
    assert category == "cluster"
    assert "refused: 403 Forbidden" in message
    assert "system:serviceaccount:" in message  # the API server's own reason
