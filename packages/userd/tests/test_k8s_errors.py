"""userd's Kubernetes API errors: one type per status, all the cluster's, one line each."""

from __future__ import annotations

import json

import pytest

from kubepresence.protocol.errors import Category, ClusterError
from kubepresence.userd.k8s import errors
from kubepresence.userd.k8s.errors import (
    KubernetesConflictError,
    KubernetesError,
    KubernetesForbiddenError,
    KubernetesInvalidError,
    KubernetesNotFoundError,
    KubernetesUnauthorizedError,
    api_errors,
    api_refusals,
    failed,
    refused,
)


def status(code: int, reason: str, message: str | None = None) -> errors.RawApiError:
    body = b"" if message is None else json.dumps({"kind": "Status", "message": message}).encode()
    return errors.api_exception(code, reason, body)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (404, KubernetesNotFoundError),
        (403, KubernetesForbiddenError),
        (401, KubernetesUnauthorizedError),
        (409, KubernetesConflictError),
        (400, KubernetesInvalidError),
        (422, KubernetesInvalidError),
        (500, KubernetesError),
        (429, KubernetesError),
    ],
)
def test_each_status_has_its_type_and_every_one_is_the_clusters(
    code: int, kind: type[KubernetesError]
) -> None:
    error = failed(status(code, "Reason", "the server's words"), "cannot read x")
    assert type(error) is kind
    assert isinstance(error, ClusterError)
    assert error.category is Category.CLUSTER
    assert (error.api_status, error.api_reason, error.api_message) == (
        code,
        "Reason",
        "the server's words",
    )


def test_failed_says_what_failed_and_the_reason() -> None:
    error = failed(status(403, "Forbidden", 'pods is forbidden: User "x"'), "cannot list pods")
    assert error.message == "cannot list pods: Forbidden"


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (403, "not allowed to read ClusterRole kp: no"),
        (401, "the API server did not accept the credentials to read ClusterRole kp: no"),
        (400, "the API server refused to read ClusterRole kp: no"),
        (422, "the API server refused to read ClusterRole kp: no"),
        (500, "cannot read ClusterRole kp: 500 no"),
    ],
)
def test_refused_is_the_installers_wording_with_the_servers_message(code: int, line: str) -> None:
    assert refused(status(code, "Reason", "no"), "read ClusterRole kp").message == line


def test_without_a_status_body_the_reason_is_the_message() -> None:
    assert refused(status(500, "Internal"), "read x").message == "cannot read x: 500 Internal"
    html = errors.api_exception(502, None, b"<html>oops</html>")
    assert refused(html, "read x").message == "cannot read x: 502 no reason given"


def test_the_blocks_translate_and_keep_the_cause() -> None:
    with (
        pytest.raises(KubernetesNotFoundError, match=r"^cannot read x: Not Found$") as raised,
        api_errors("cannot read x"),
    ):
        raise status(404, "Not Found")
    assert isinstance(raised.value.__cause__, errors.RawApiError)
    with (
        pytest.raises(KubernetesForbiddenError, match=r"^not allowed to read x: no$"),
        api_refusals("read x"),
    ):
        raise status(403, "Forbidden", "no")


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), api_errors("anything"):
        raise KeyError("a bug stays a bug")
    with pytest.raises(TimeoutError), api_refusals("anything"):
        raise TimeoutError
