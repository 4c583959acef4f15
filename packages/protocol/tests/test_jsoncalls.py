"""The JSON calls (`jsoncalls`, `jsonserving`): heads parsed, answers built and read, and a
servicer's replies and errors carried as the gRPC call would carry them."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.protocol import jsoncalls, jsonserving
from kubepresence.protocol.errors import Category, KubepresenceError, NotFoundError, UserError
from kubepresence.protocol.gen import common, connector, daemon
from kubepresence.protocol.gen.google import protobuf

STATUS = jsoncalls.USERD_STATUS


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_request_built_here_parses_back() -> None:
    data = jsoncalls.request(STATUS, {"namespace": "shop"})
    request_head, _, body = data.partition(b"\r\n\r\n")
    call = jsoncalls.parse_head(request_head + b"\r\n\r\n")
    assert call == jsoncalls.CallHead(STATUS, len(body))
    assert jsoncalls.parse_body(body) == {"namespace": "shop"}


def test_header_names_and_media_type_parameters_are_read_loosely() -> None:
    call = jsoncalls.parse_head(
        head(f"POST {STATUS} HTTP/1.0", "content-type: Application/JSON; charset=utf-8")
    )
    assert call == jsoncalls.CallHead(STATUS, 0)


@pytest.mark.parametrize(
    ("lines", "status", "code"),
    [
        ((f"GET {STATUS} HTTP/1.1", "Content-Type: application/json"), 405, "unimplemented"),
        ((f"POST {STATUS} HTTP/1.1",), 415, "invalid_argument"),
        ((f"POST {STATUS} HTTP/1.1", "Content-Type: text/plain"), 415, "invalid_argument"),
        ((f"POST {STATUS} SPDY/3",), 400, "invalid_argument"),
        ((f"POST {STATUS}",), 400, "invalid_argument"),
        ((f"POST {STATUS} HTTP/1.1", "no colon here"), 400, "invalid_argument"),
        ((f"POST {STATUS} HTTP/1.1", " Content-Type: application/json"), 400, "invalid_argument"),
        (
            (
                f"POST {STATUS} HTTP/1.1",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            ),
            411,
            "invalid_argument",
        ),
        (
            (f"POST {STATUS} HTTP/1.1", "Content-Type: application/json", "Content-Length: -1"),
            400,
            "invalid_argument",
        ),
        (
            (
                f"POST {STATUS} HTTP/1.1",
                "Content-Type: application/json",
                f"Content-Length: {jsoncalls.MAX_BODY + 1}",
            ),
            413,
            "resource_exhausted",
        ),
    ],
)
def test_what_is_not_a_call_is_refused_with_its_status(
    lines: tuple[str, ...], status: int, code: str
) -> None:
    with pytest.raises(jsoncalls.BadRequestError) as refused:
        jsoncalls.parse_head(head(*lines))
    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_head_that_is_not_ascii_is_refused() -> None:
    with pytest.raises(jsoncalls.BadRequestError):
        jsoncalls.parse_head(f"POST {STATUS}é HTTP/1.1\r\n\r\n".encode())


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused(data: bytes) -> None:
    outcome: jsoncalls.CallHead | jsoncalls.BadRequestError
    try:
        outcome = jsoncalls.parse_head(data)
    except jsoncalls.BadRequestError as refused:
        outcome = refused
    if isinstance(outcome, jsoncalls.CallHead):
        assert 0 <= outcome.content_length <= jsoncalls.MAX_BODY
    else:
        assert outcome.status in {400, 405, 411, 413, 415}


@pytest.mark.parametrize(
    "body", [b"[]", b"7", b"{", b"\xff", b'"text"'], ids=["list", "number", "cut", "bytes", "str"]
)
def test_a_body_must_be_a_json_object(body: bytes) -> None:
    with pytest.raises(jsoncalls.BadRequestError) as refused:
        jsoncalls.parse_body(body)
    assert refused.value.code == "invalid_argument"


def test_an_empty_body_is_the_empty_message() -> None:
    assert jsoncalls.parse_body(b"") == jsoncalls.parse_body(b"  \n") == {}


def test_an_answer_reads_back() -> None:
    assert jsoncalls.read_answer(jsoncalls.answer(200, {"a": [1]}), "x") == {"a": [1]}


@pytest.mark.parametrize(
    ("code", "category", "status"),
    [
        ("invalid_argument", Category.USER, 400),
        ("not_found", Category.USER, 404),
        ("failed_precondition", Category.CONFIG, 400),
        ("unavailable", Category.CLUSTER, 503),
        ("permission_denied", Category.CLUSTER, 403),
        ("internal", Category.INTERNAL, 500),
        ("no_such_code", Category.INTERNAL, 500),
    ],
)
def test_an_error_answer_is_the_error_of_its_category(
    code: str, category: Category, status: int
) -> None:
    data = jsoncalls.error_answer(code, "it went wrong")
    assert data.startswith(f"HTTP/1.1 {status} ".encode())
    with pytest.raises(KubepresenceError) as failed:
        jsoncalls.read_answer(data, "the user daemon")
    assert (failed.value.category, failed.value.message) == (category, "it went wrong")


@pytest.mark.parametrize(
    "data",
    [b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\n\r\nnot json", b"junk\r\n\r\n{}"],
)
def test_what_is_no_answer_is_an_internal_error(data: bytes) -> None:
    with pytest.raises(KubepresenceError) as failed:
        jsoncalls.read_answer(data, "the root daemon")
    assert failed.value.category is Category.INTERNAL
    assert "the root daemon" in failed.value.message


class Daemon(daemon.DaemonBase):
    """A servicer whose Version fails as told."""

    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure

    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        if self.failure is not None:
            raise self.failure
        return common.VersionInfo(name="rootd", version="9.8.7")


class Connector(connector.ConnectorBase):
    def __init__(self) -> None:
        self.asked: list[connector.ListRequest] = []

    async def list(self, message: connector.ListRequest) -> connector.WorkloadList:
        self.asked.append(message)
        return connector.WorkloadList(
            workloads=[connector.WorkloadInfo(name="orders", kind=common.WorkloadKind.DEPLOYMENT)]
        )


async def served(service: Any, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    handlers = jsonserving.served_handlers([service], [path])
    data = await jsonserving.answer_call(handlers, path, body)
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.partition(b"\r\n\r\n")[2])


async def test_the_servicer_answers_in_protobufs_json_mapping() -> None:
    service = Connector()
    status, reply = await served(
        service, jsoncalls.USERD_LIST, b'{"namespace": "shop", "onlyIntercepted": true}'
    )
    assert service.asked == [connector.ListRequest(namespace="shop", only_intercepted=True)]
    assert (status, reply) == (
        200,
        {
            "workloads": [
                {
                    "name": "orders",
                    "namespace": "",
                    "kind": "WORKLOAD_KIND_DEPLOYMENT",
                    "agent_installed": False,
                    "intercepts": [],
                }
            ]
        },
    )


@pytest.mark.parametrize(
    ("failure", "status", "code", "message"),
    [
        (UserError("no such workload"), 400, "invalid_argument", "no such workload"),
        (NotFoundError("gone"), 404, "not_found", "gone"),
        (KubepresenceError("cut off", Category.CLUSTER), 503, "unavailable", "cut off"),
    ],
)
async def test_a_servicers_error_is_its_status(
    failure: BaseException, status: int, code: str, message: str
) -> None:
    answer = await served(Daemon(failure), jsoncalls.ROOTD_VERSION, b"{}")
    assert answer == (status, {"code": code, "message": message})


async def test_a_bug_in_a_servicer_is_internal_and_names_the_log() -> None:
    status, error = await served(Daemon(KeyError("x")), jsoncalls.ROOTD_VERSION, b"")
    assert (status, error["code"]) == (500, "internal")
    assert error["message"].startswith("unexpected error (KeyError: 'x')")


@pytest.mark.parametrize(
    "body",
    [b'{"namespace": 7}', b'{"only_intercepted": "yes"}', b'{"nope": 1}', b"[1]"],
    ids=["number-for-string", "string-for-bool", "unknown-field", "not-an-object"],
)
async def test_a_request_that_is_not_the_methods_message_is_invalid(body: bytes) -> None:
    service = Connector()
    status, error = await served(service, jsoncalls.USERD_LIST, body)
    assert (status, error["code"]) == (400, "invalid_argument")
    assert service.asked == []


async def test_a_method_not_served_in_json_is_unimplemented() -> None:
    handlers = jsonserving.served_handlers([Daemon()], [jsoncalls.ROOTD_VERSION])
    data = await jsonserving.answer_call(handlers, "/kubepresence.daemon.Daemon/Quit", b"{}")
    assert data.startswith(b"HTTP/1.1 501 ")


def test_the_served_calls_exist_and_are_unary() -> None:
    """A typo in jsoncalls would stop a daemon at start: here it stops the test."""
    connector_paths = jsonserving.served_handlers([Connector()], jsoncalls.USERD_CALLS)
    daemon_paths = jsonserving.served_handlers([Daemon()], jsoncalls.ROOTD_CALLS)
    handlers = [*connector_paths.values(), *daemon_paths.values()]
    assert {h.cardinality for h in handlers} == {Cardinality.UNARY_UNARY}
    with pytest.raises(ValueError, match="no unary method"):
        jsonserving.served_handlers([Daemon()], ["/kubepresence.daemon.Daemon/Nope"])


def test_a_daemon_that_never_answers_is_one_line(tmp_path: Path) -> None:
    """A frozen daemon's socket accepts (the kernel's backlog) and sends nothing."""
    path = tmp_path / "frozen.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        with pytest.raises(KubepresenceError) as failed:
            jsoncalls.call(path, STATUS, {}, timeout=0.2, what="the user daemon")
    assert failed.value.message == "the user daemon does not answer (nothing within 0.2 s)"


def test_a_socket_nobody_serves_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(KubepresenceError) as failed:
        jsoncalls.call(tmp_path / "none.socket", STATUS, {}, timeout=1, what="the root daemon")
    assert failed.value.message == "the root daemon does not answer (No such file or directory)"
    assert failed.value.category is Category.INTERNAL
