"""Kubernetes API errors become the project's categories, with one clear line."""

from __future__ import annotations

import json

import aiohttp
import pytest

from kubepresence.manager.k8s import errors
from kubepresence.manager.k8s.errors import KubernetesError, api_errors, api_message, translate
from kubepresence.protocol.errors import (
    Category,
    ClusterError,
    KubepresenceError,
    NotFoundError,
    UserError,
)


def api_exception(
    status: int, message: str | None = None, reason: str = "Reason"
) -> errors.RawApiError:
    if message is None:
        return errors.api_exception(status, reason)
    body = json.dumps({"kind": "Status", "code": status, "message": message}).encode()
    return errors.api_exception(status, reason, body)


@pytest.mark.parametrize(
    ("status", "kind", "category"),
    [
        (404, NotFoundError, Category.USER),
        (400, UserError, Category.USER),
        (422, UserError, Category.USER),
        (401, ClusterError, Category.CLUSTER),
        (403, ClusterError, Category.CLUSTER),
        (409, ClusterError, Category.CLUSTER),
        (410, ClusterError, Category.CLUSTER),
        (429, ClusterError, Category.CLUSTER),
        (500, ClusterError, Category.CLUSTER),
        (503, ClusterError, Category.CLUSTER),
    ],
)
def test_statuses_map_to_categories(
    status: int, kind: type[KubepresenceError], category: Category
) -> None:
    error = translate(api_exception(status, "the server says so"), "cannot read Deployment a/b")
    assert isinstance(error, kind)
    assert isinstance(error, KubernetesError)
    assert error.category is category
    assert error.api_status == status
    assert error.message.startswith("cannot read Deployment a/b: ")
    assert "the server says so" in error.message
    assert "\n" not in error.message


def test_forbidden_names_the_rbac() -> None:
    error = translate(
        api_exception(403, 'pods is forbidden: User "x" cannot watch resource "pods"'),
        "cannot watch pods",
    )
    assert error.message == (
        "cannot watch pods: forbidden: the manager's RBAC does not allow it "
        '(pods is forbidden: User "x" cannot watch resource "pods")'
    )


def test_the_message_comes_from_the_status_body_else_the_reason() -> None:
    assert api_message(api_exception(404, 'deployments.apps "x" not found')) == (
        'deployments.apps "x" not found'
    )
    assert api_message(api_exception(404, reason="Not Found")) == "Not Found"
    no_json = errors.api_exception(500, "Internal", b"<html>oops</html>")
    assert api_message(no_json) == "Internal"
    as_bytes = errors.api_exception(500, "Internal", json.dumps({"message": "from bytes"}).encode())
    assert api_message(as_bytes) == "from bytes"
    assert api_message(errors.api_exception(502, None)) == "HTTP 502"


def test_api_errors_translates_inside_the_block() -> None:
    with (
        pytest.raises(NotFoundError, match=r"^cannot read x: gone$") as raised,
        api_errors("cannot read x"),
    ):
        raise api_exception(404, "gone")
    assert isinstance(raised.value.__cause__, errors.RawApiError)


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (aiohttp.ClientConnectionError("refused"), "cannot be reached .*refused"),
        (ConnectionResetError("reset"), "cannot be reached .*reset"),
        (aiohttp.SocketTimeoutError(), "did not answer in time"),
        (TimeoutError(), "did not answer in time"),
    ],
)
def test_an_unreachable_api_server_is_a_cluster_error(failure: Exception, message: str) -> None:
    with (
        pytest.raises(ClusterError, match=f"^cannot list nodes: the API server {message}"),
        api_errors("cannot list nodes"),
    ):
        raise failure


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), api_errors("anything"):
        raise KeyError("a bug stays a bug")
