"""Personal intercepts on the real cluster: HTTP requests routed one by one by their head.

One workstation session holds several personal intercepts of the same workload port,
each with its own filter and its own local server (only one kubepresence session can
live in the workstation namespace at a time, so "two developers" are two intercepts with
different headers here). A pod in the cluster then shows:
- requests with alice's header reach alice's server, bob's reach bob's, the rest the app,
  and one keep-alive connection alternating headers is routed per request;
- path and method filters; chunked request and response bodies; a 50 MiB body arrives
  checksum-equal; an upgraded connection (101) is piped raw to the side that accepted it;
- after `leave`, the intercept's requests reach the app again;
- a global intercept next to personal ones is refused, and bad filters get one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from kpcluster.harness import Cluster
from workstation_cli import Workstation

PORTS = {"alice": 8191, "bob": 8192, "carol": 8193}
MIB = 1024 * 1024

# A workstation server that says who it is, reads chunked or sized bodies, answers
# /chunked with a chunked body, and turns an Upgrade request into a raw echo.
LOCAL_SERVER = textwrap.dedent(
    """
    import hashlib, http.server, json, sys
    NAME, PORT = sys.argv[1], int(sys.argv[2])
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def body(self):
            digest, size = hashlib.sha256(), 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    length = int(self.rfile.readline().split(b";")[0], 16)
                    if length == 0:
                        while self.rfile.readline() not in (b"\\r\\n", b""):
                            pass
                        break
                    left = length
                    while left:
                        data = self.rfile.read(min(left, 1 << 20))
                        digest.update(data); size += len(data); left -= len(data)
                    self.rfile.readline()
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    digest.update(data); size += len(data); left -= len(data)
            return size, digest.hexdigest()
        def handle_one(self):
            if self.headers.get("Upgrade"):
                self.send_response(101)
                self.send_header("Upgrade", self.headers["Upgrade"])
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                while data := self.connection.recv(65536):
                    self.connection.sendall(NAME.encode() + b":" + data)
                self.close_connection = True
                return
            size, digest = self.body()
            answer = json.dumps({"who": NAME, "method": self.command, "path": self.path,
                                 "body_length": size, "sha256": digest}).encode()
            self.send_response(200)
            if self.path.startswith("/chunked"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in (answer[:10], answer[10:]):
                    self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(part), part))
                self.wfile.write(b"0\\r\\n\\r\\n")
            else:
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
        do_GET = do_POST = do_PUT = handle_one
        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
    """
)

# The cluster-side client: one keep-alive connection, a list of requests, each answer's
# JSON (with who answered: a workstation server's name, else the app pod's name).
CLIENT = textwrap.dedent(
    """
    import hashlib, http.client, json, os, socket, sys
    host, plan = sys.argv[1], json.loads(sys.argv[2])
    results = []
    conn = http.client.HTTPConnection(host, 80, timeout=60)
    for step in plan:
        headers = dict(step.get("headers", {}))
        body = None
        if "body_mib" in step:
            block = os.urandom(1 << 20)
            digest = hashlib.sha256()
            for _ in range(step["body_mib"]):
                digest.update(block)
            body = block * step["body_mib"]
            headers["Content-Length"] = str(len(body))
            expected = digest.hexdigest()
        elif "chunks" in step:
            parts = [c.encode() for c in step["chunks"]]
            expected = hashlib.sha256(b"".join(parts)).hexdigest()
            body = iter(parts)
            headers["Transfer-Encoding"] = "chunked"
        else:
            expected = hashlib.sha256(b"").hexdigest()
        conn.request(step.get("method", "GET"), step["path"], body=body, headers=headers,
                     encode_chunked="chunks" in step)
        response = conn.getresponse()
        answer = json.loads(response.read())
        results.append({
            "status": response.status,
            "who": answer.get("who") or answer.get("pod", "?"),
            "path": answer.get("path"),
            "chunked": response.getheader("Transfer-Encoding") == "chunked",
            "body_ok": answer.get("sha256", expected) == expected,
            "body_length": answer.get("body_length"),
        })
    print(json.dumps(results))
    """
)

UPGRADE = textwrap.dedent(
    """
    import json, socket, sys
    host, header = sys.argv[1], sys.argv[2]
    sock = socket.create_connection((host, 80), timeout=30)
    sock.sendall(("GET /ws HTTP/1.1\\r\\nHost: echo\\r\\nUpgrade: websocket\\r\\n"
                  "Connection: Upgrade\\r\\n" + header + "\\r\\n\\r\\n").encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += sock.recv(1)
    sock.sendall(b"ping")
    echoed = b""
    while len(echoed) < len(b"alice:ping"):
        data = sock.recv(100)
        if not data:
            break
        echoed += data
    print(json.dumps({"status": head.split(b" ")[1].decode(), "echoed": echoed.decode()}))
    """
)


@pytest.fixture
def local_servers(cluster: Cluster) -> Iterator[dict[str, subprocess.Popen[str]]]:
    servers = {
        name: cluster.start_on_workstation([sys.executable, "-c", LOCAL_SERVER, name, str(port)])
        for name, port in PORTS.items()
    }
    time.sleep(0.5)
    try:
        for name, process in servers.items():
            assert process.poll() is None, f"{name}: " + (
                process.stdout.read() if process.stdout else ""
            )
        yield servers
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(10)


def intercept(
    workstation: Workstation, namespace: str, name: str, *filters: str
) -> subprocess.CompletedProcess[str]:
    return workstation.kp(
        "intercept", "echo", "--name", name, "--port", f"{PORTS[name]}:http", "-n", namespace,
        *filters, timeout=240,
    )  # fmt: skip


def requests_from_pod(
    cluster: Cluster, namespace: str, pod: str, plan: list[dict[str, object]]
) -> list[dict[str, object]]:
    result = cluster.exec_in_pod(
        namespace, pod, ["python3", "-c", CLIENT, f"echo.{namespace}", json.dumps(plan)],
        timeout=180,
    )  # fmt: skip
    return list(json.loads(result.stdout))


def test_personal_intercepts_route_each_request(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_servers: dict[str, subprocess.Popen[str]],
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.log("userd")

    started = time.monotonic()
    alice = intercept(workstation, namespace, "alice", "--http-header", "x-dev=alice")
    assert alice.returncode == 0, alice.stderr + workstation.log("userd")
    first_seconds = time.monotonic() - started
    assert "requests with x-dev: alice" in alice.stdout
    bob = intercept(workstation, namespace, "bob", "--http-header", "X-Dev=bob")
    assert bob.returncode == 0, bob.stderr
    carol = intercept(
        workstation, namespace, "carol",
        "--http-path-prefix", "/carol/", "--http-method", "post",
    )  # fmt: skip
    assert carol.returncode == 0, carol.stderr

    listed = json.loads(workstation.kp("list", "-n", namespace, "-o", "json").stdout)
    [echo] = [w for w in listed["workloads"] if w["name"] == "echo"]
    filters = {i["name"]: (i["http_filter"], i["state"]) for i in echo["intercepts"]}
    assert filters == {
        "alice": ("x-dev: alice", "active"),
        "bob": ("x-dev: bob", "active"),
        "carol": ("path prefix /carol/, method POST", "active"),
    }

    alice_h, bob_h = {"x-dev": "alice"}, {"X-DEV": "bob"}
    plan: list[dict[str, object]] = [
        {"path": "/1", "headers": alice_h},
        {"path": "/2", "headers": bob_h},
        {"path": "/3"},
        {"path": "/4", "headers": alice_h},
        {"path": "/5", "headers": {"x-dev": "mallory"}},
        {"path": "/carol/6", "method": "POST"},
        {"path": "/carol/7"},  # GET: carol's filter wants POST
        {"path": "/chunked/8", "headers": bob_h, "method": "POST", "chunks": ["a" * 1000, "b"]},
        {"path": "/9", "headers": alice_h, "method": "PUT", "body_mib": 50},
        {"path": "/10", "method": "PUT", "body_mib": 5},
    ]
    results = requests_from_pod(cluster, namespace, client, plan)
    who = [str(r["who"]) for r in results]
    assert who[:2] == ["alice", "bob"]
    assert who[2].startswith("echo-")  # the app pod
    assert who[3] == "alice"
    assert who[4].startswith("echo-")
    assert who[5] == "carol"
    assert who[6].startswith("echo-")
    assert who[7:9] == ["bob", "alice"]
    assert who[9].startswith("echo-")
    assert all(r["status"] == 200 for r in results), results
    assert [r["path"] for r in results] == [step["path"] for step in plan]
    assert (results[7]["chunked"], results[7]["body_ok"], results[7]["body_length"]) == (
        True,
        True,
        1001,
    )
    assert (results[8]["body_ok"], results[8]["body_length"]) == (True, 50 * MIB)
    assert results[9]["body_length"] == 5 * MIB

    upgraded = cluster.exec_in_pod(
        namespace, client, ["python3", "-c", UPGRADE, f"echo.{namespace}", "x-dev: alice"]
    )
    assert json.loads(upgraded.stdout) == {"status": "101", "echoed": "alice:ping"}

    # A global intercept cannot join personal ones.
    clash = workstation.kp(
        "intercept", "echo", "--name", "all", "--port", "8194:http", "-n", namespace
    )
    assert clash.returncode == 2, clash.stderr
    assert "a global intercept cannot share a port" in clash.stderr
    same = intercept(workstation, namespace, "bob", "--http-header", "x-dev=alice")
    assert same.returncode == 2, same.stderr

    left = workstation.kp("leave", "alice")
    assert left.returncode == 0, left.stderr
    after = requests_from_pod(
        cluster,
        namespace,
        client,
        [{"path": "/a", "headers": alice_h}, {"path": "/b", "headers": bob_h}],
    )
    assert str(after[0]["who"]).startswith("echo-")
    assert after[1]["who"] == "bob"
    print(f"first personal intercept active after {first_seconds:.1f} s (agent injected on demand)")


def test_bad_filters_say_why(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    cases = {
        ("--http-header", "x-dev"): "expected NAME=VALUE",
        ("--http-header", "bad name=1"): "is not a valid header name",
        ("--http-path-regex", "(["): "--http-path-regex '(['",
        ("--http-path-prefix", "api"): "a path starts with '/'",
    }
    for options, reason in cases.items():
        result = workstation.kp(
            "intercept", "echo", "--port", "8191:http", "-n", namespace, *options
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert reason in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    listed = json.loads(workstation.kp("list", "-n", namespace, "-o", "json").stdout)
    assert all(w["intercepts"] == [] for w in listed["workloads"])


# The frontend of the preview test: calls the echo backend and passes the preview's
# header on (propagating it is the app's job, like any tracing header).
FRONTEND = textwrap.dedent(
    """
    import http.server, json, os, urllib.request
    BACKEND = os.environ["BACKEND"]
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            passed = {k: v for k, v in self.headers.items()
                      if k.lower().startswith("x-kubepresence")}
            request = urllib.request.Request(BACKEND + self.path, headers=passed)
            with urllib.request.urlopen(request, timeout=20) as answer:
                backend = json.loads(answer.read())
            body = json.dumps({"frontend": True, "backend": backend}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
    """
)

FETCH = textwrap.dedent(
    """
    import json, sys, urllib.request
    with urllib.request.urlopen(sys.argv[1], timeout=30) as answer:
        print(json.dumps({"status": answer.status, "body": json.loads(answer.read())}))
    """
)


def frontend(namespace: str, image: str) -> list[dict[str, object]]:
    labels = {"app": "frontend"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "frontend", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "frontend",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["python3", "-c", FRONTEND],
                                "env": [{"name": "BACKEND", "value": f"http://echo.{namespace}"}],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "frontend", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    ]


def test_preview_url_shows_the_workstation_through_the_frontend(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_servers: dict[str, subprocess.Popen[str]],
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    cluster.apply(frontend(namespace, cluster.testapps_image))
    cluster.kubectl("rollout", "status", "deployment/frontend", "-n", namespace, "--timeout=120s",
                    timeout=130)  # fmt: skip
    client = cluster.client_pod(namespace)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0

    result = intercept(
        workstation, namespace, "alice",
        "--preview-url", "--ingress-host", f"frontend.{namespace}", "-o", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + workstation.log("userd")
    created = json.loads(result.stdout)
    url = created["preview_url"]
    assert url.startswith(f"http://kubepresence-manager.{manager_namespace}:8082/"), (
        result.stdout
        + cluster.kubectl("logs", "-n", manager_namespace, "deployment/kubepresence-manager")
    )
    assert created["http_filter"].startswith("x-kubepresence-intercept-id: ")

    def fetch(address: str) -> dict[str, object]:
        out = cluster.exec_in_pod(namespace, client, ["python3", "-c", FETCH, address]).stdout
        return dict(json.loads(out))

    previewed = fetch(url + "hello?x=1")
    assert previewed["status"] == 200
    body = previewed["body"]
    assert isinstance(body, dict)
    assert body["frontend"] is True
    assert body["backend"]["who"] == "alice", body  # the workstation answered
    assert body["backend"]["path"] == "/hello?x=1"

    plain = fetch(f"http://frontend.{namespace}/hello")["body"]
    assert isinstance(plain, dict)
    assert str(plain["backend"]["pod"]).startswith("echo-")  # the app answered

    listed = json.loads(workstation.kp("list", "-n", namespace, "-o", "json").stdout)
    [echo] = [w for w in listed["workloads"] if w["name"] == "echo"]
    assert [i["preview_url"] for i in echo["intercepts"]] == [url]

    assert workstation.kp("leave", "alice").returncode == 0
    gone = cluster.exec_in_pod(
        namespace, client, ["python3", "-c", FETCH, url + "hello"], check=False
    )
    assert "404" in gone.stdout + gone.stderr


RAW_ECHO = textwrap.dedent(
    """
    import json, socket, sys
    sock = socket.create_connection((sys.argv[1], 9000), timeout=20)  # the tcp-echo Service
    sock.sendall(b"\\x00\\x01 not http\\n")
    sock.shutdown(socket.SHUT_WR)
    got = b""
    while data := sock.recv(100):
        got += data
    print(json.dumps({"echoed": got.decode()}))
    """
)


def test_a_filter_on_a_port_that_is_not_http(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("tcp", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    result = workstation.kp(
        "intercept", "tcp-echo", "--port", "8191:tcp", "-n", namespace, "--http-header", "x-dev=a",
        "--mount=false", timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + workstation.log("userd")
    echoed = cluster.exec_in_pod(
        namespace, client, ["python3", "-c", RAW_ECHO, f"tcp-echo.{namespace}"]
    )
    assert json.loads(echoed.stdout) == {"echoed": "\x00\x01 not http\n"}  # the app answered
    deadline = time.monotonic() + 20
    while True:
        listed = workstation.kp("list", "-n", namespace)
        if "not HTTP" in listed.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "the port carries traffic that is not HTTP" in listed.stdout, listed.stdout


# An h2c server (prior knowledge) on the workstation, with the h2 library.
H2C_SERVER = textwrap.dedent(
    """
    import socket, sys, threading
    import h2.config, h2.connection, h2.events
    PORT = int(sys.argv[1])
    def serve(sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers = dict(event.headers)
                    path, dev = headers[b":path"], headers.get(b"x-dev", b"-")
                    body = b"workstation h2c " + path + b" " + dev
                    conn.send_headers(event.stream_id, [(":status", "200"),
                                      ("content-length", str(len(body)))])
                    conn.send_data(event.stream_id, body, end_stream=True)
            sock.sendall(conn.data_to_send())
        sock.close()
    listener = socket.create_server(("127.0.0.1", PORT))
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()
    """
)

# An h2c client with the standard library only (the pod has no h2): the preface, empty
# SETTINGS, one HEADERS frame in literal HPACK, then DATA of stream 1 until its end.
H2C_CLIENT = textwrap.dedent(
    """
    import json, socket, struct, sys
    host, dev = sys.argv[1], sys.argv[2]
    def literal(name, value):
        return bytes([0, len(name)]) + name + bytes([len(value)]) + value
    def frame(kind, flags, stream, payload=b""):
        head = struct.pack("!I", len(payload))[1:] + bytes([kind, flags])
        return head + struct.pack("!I", stream) + payload
    block = b"".join(literal(n, v) for n, v in [
        (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/h2"),
        (b":authority", host.encode()), (b"x-dev", dev.encode())])
    sock = socket.create_connection((host, 80), timeout=20)
    preface = b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n"
    sock.sendall(preface + frame(4, 0, 0) + frame(1, 5, 1, block))
    buffer, body, done = b"", b"", False
    while not done:
        data = sock.recv(65536)
        if not data:
            break
        buffer += data
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload, buffer = buffer[9:9 + length], buffer[9 + length:]
            if kind == 4 and not flags & 1:
                sock.sendall(frame(4, 1, 0))  # acknowledge the server's SETTINGS
            if stream == 1 and kind == 0:
                body += payload
            if stream == 1 and kind in (0, 1) and flags & 1:
                done = True
    print(json.dumps({"body": body.decode(errors="replace"), "done": done}))
    """
)


def test_h2c_requests_are_routed_per_request(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)
    server = cluster.start_on_workstation([sys.executable, "-c", H2C_SERVER, str(PORTS["alice"])])
    try:
        time.sleep(0.5)
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
        result = intercept(
            workstation, namespace, "alice", "--http-header", "x-dev=alice", "--mount=false"
        )
        assert result.returncode == 0, result.stderr + workstation.log("userd")
        answer = cluster.exec_in_pod(
            namespace, client, ["python3", "-c", H2C_CLIENT, f"echo.{namespace}", "alice"]
        )
        assert json.loads(answer.stdout) == {"body": "workstation h2c /h2 alice", "done": True}
    finally:
        server.terminate()
        server.wait(10)
