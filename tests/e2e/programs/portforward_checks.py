"""userd's own port-forward code driven from the workstation by test_userd_portforward,
as userd runs it (uvloop). One subcommand per test; each prints one JSON document.

- `forward NS POD PORT BAD_PORT KUBECONFIG TCP_POD TCP_PORT PROTOCOL`: a request over a
  fresh port-forward, a refused port, the asyncio transport over the stream (twice), and
  8 MiB echoed through a TCP echo pod;
- `fallback NS POD PORT KUBECONFIG`: through a plain-HTTP front of the API server that
  refuses SPDY upgrades (as some proxies do): auto falls back to the WebSocket and keeps
  it, spdy alone says why it failed;
- `token NS POD PORT ALLOWED_KUBECONFIG REFUSED_KUBECONFIG`: a request as each of two
  bearer-token users.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from kubernetes_asyncio import client

from kubepresence.protocol.errors import KubepresenceError
from kubepresence.userd.k8s.apiclient import load_configuration, websocket_client
from kubepresence.userd.k8s.portforward import PortForwarder
from kubepresence.userd.k8s.portforward_grpc import transport_for
from kubepresence.userd.k8s.portforward_spdy import ssl_context


async def ask(forwarder: PortForwarder, request: bytes) -> str:
    """One HTTP request through a fresh port-forward: the answer's text."""
    async with forwarder.open() as stream:
        await stream.send(request)
        answer = b""
        while (chunk := await stream.receive()) is not None:
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    return answer.decode()


# -- forward ---------------------------------------------------------------------------


async def forward(args: list[str]) -> dict[str, Any]:
    ns, pod, port, bad_port = args[0], args[1], int(args[2]), int(args[3])
    kubeconfig, tcp_pod, tcp_port, protocol = args[4], args[5], int(args[6]), args[7]
    request = b"GET /pf-check HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
    bulk = os.urandom(8 * 1024 * 1024)

    class Asking(asyncio.Protocol):
        def __init__(self) -> None:
            self.answer = b""
            self.lost: list[Exception | None] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(request)

        def data_received(self, data: bytes) -> None:
            self.answer += data

        def connection_lost(self, error: Exception | None) -> None:
            self.lost.append(error)

    class Echoed(asyncio.Protocol):
        # Writes the bulk in one go: the transport splits it and the socket pushes back.
        def __init__(self) -> None:
            self.digest = hashlib.sha256()
            self.size = 0
            self.done = asyncio.get_running_loop().create_future()
            self.pauses = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            for at in range(0, len(bulk), 200_000):
                transport.write(bulk[at : at + 200_000])

        def pause_writing(self) -> None:
            self.pauses += 1

        def resume_writing(self) -> None:
            pass

        def data_received(self, data: bytes) -> None:
            self.digest.update(data)
            self.size += len(data)
            if self.size >= len(bulk) and not self.done.done():
                self.done.set_result(None)
                self.transport.close()

        def connection_lost(self, error: Exception | None) -> None:
            if not self.done.done():
                self.done.set_result(None)

    async def echo_bulk(stream: Any) -> list[object]:
        echoed = Echoed()
        transport = transport_for(stream, echoed)
        echoed.connection_made(transport)
        await asyncio.wait_for(transport.pump(), 60)
        same = echoed.digest.hexdigest() == hashlib.sha256(bulk).hexdigest()
        return [echoed.size, same, type(transport).__name__]

    api = websocket_client(await load_configuration(Path(kubeconfig)))
    result: dict[str, Any] = {}
    async with api:
        forwarder = PortForwarder(api, ns, pod, port, protocol)
        result["direct"] = await ask(forwarder, request)
        result["protocol"] = forwarder.protocol
        try:
            async with PortForwarder(api, ns, pod, bad_port, protocol).open() as stream:
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
        async with PortForwarder(api, ns, tcp_pod, tcp_port, protocol).open() as stream:
            result["bulk"] = await echo_bulk(stream)
    return result


# -- fallback --------------------------------------------------------------------------

REFUSAL = b"only WebSocket upgrades here"


async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def proxy_for(
    conf: client.Configuration, server: urllib.parse.SplitResult, seen: list[str]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    # A plain-HTTP front for the API server that refuses SPDY upgrades, as some
    # proxies do; it authenticates upstream with the workstation's credentials.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        upgrade = [line for line in lines if line.startswith(b"upgrade:")]
        seen.append(upgrade[0].decode() if upgrade else "none")
        if b"spdy" in b"".join(upgrade):
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                + b"Content-Length: %d\r\n\r\n" % len(REFUSAL)
                + REFUSAL
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


async def fallback(args: list[str]) -> dict[str, Any]:
    ns, pod, port, kubeconfig = args[0], args[1], int(args[2]), args[3]
    request = b"GET /fallback HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
    seen: list[str] = []
    conf = await load_configuration(Path(kubeconfig))
    server = urllib.parse.urlsplit(str(conf.host))
    proxy = await asyncio.start_server(proxy_for(conf, server, seen), "127.0.0.1", 0)
    conf.host = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    result: dict[str, Any] = {}
    async with websocket_client(conf) as api:
        forwarder = PortForwarder(api, ns, pod, port, "auto")
        result["answers"] = [await ask(forwarder, request), await ask(forwarder, request)]
        result["protocol"] = forwarder.protocol
        try:
            await ask(PortForwarder(api, ns, pod, port, "spdy"), request)
            result["spdy_only"] = "no error"
        except KubepresenceError as error:
            result["spdy_only"] = [error.category.value, error.message]
    result["upgrades_seen"] = seen
    proxy.close()
    return result


# -- token -----------------------------------------------------------------------------


async def token(args: list[str]) -> list[object]:
    ns, pod, port = args[0], args[1], int(args[2])
    request = b"GET /token HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"

    async def ask_as(kubeconfig: str) -> object:
        async with websocket_client(await load_configuration(Path(kubeconfig))) as api:
            try:
                return await ask(PortForwarder(api, ns, pod, port, "spdy"), request)
            except KubepresenceError as error:
                return [error.category.value, error.message]

    return [await ask_as(args[3]), await ask_as(args[4])]


CHECKS: dict[str, Callable[[list[str]], Awaitable[object]]] = {
    "forward": forward,
    "fallback": fallback,
    "token": token,
}


def main() -> None:
    check = CHECKS[sys.argv[1]]

    async def run() -> None:
        print(json.dumps(await check(sys.argv[2:])))

    uvloop.run(run())  # as userd runs


if __name__ == "__main__":
    main()
