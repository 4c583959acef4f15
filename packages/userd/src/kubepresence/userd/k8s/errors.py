"""Kubernetes API errors, translated once into the project's categories.

Every userd call to the API server that can fail runs inside `api_errors(failing)` (or
`api_refusals(doing)`, the installer's wording): an ApiException comes out as a
`KubernetesError` whose one line says what userd was doing and what the API server said.
The status picks the type, for callers that act on one:

| the API server says   | error                        | category |
|-----------------------|------------------------------|----------|
| 404 Not Found         | KubernetesNotFoundError      | cluster  |
| 403 Forbidden         | KubernetesForbiddenError     | cluster  |
| 401 Unauthorized      | KubernetesUnauthorizedError  | cluster  |
| 409 Conflict          | KubernetesConflictError      | cluster  |
| 400 Bad Request, 422  | KubernetesInvalidError       | cluster  |
| anything else         | KubernetesError              | cluster  |

Unlike the manager's translator (`manager/k8s/errors.py`), every one of them is a
`ClusterError`: what userd asks the API server for is its own doing, not the user's
words, and the callers for whom a status means the user (a namespace or workload that
does not exist) catch that type and raise a `UserError` or `NotFoundError` naming it.

The status, the HTTP reason and the API server's own message stay on the error
(`api_status`, `api_reason`, `api_message`). Only this module names the client's
exception (a lint rule bans it elsewhere); `RawApiError` and `api_exception` are for the
layer below translation (the API client's retry on a revoked token) and for tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes_asyncio.client.exceptions import ApiException

from kubepresence.protocol.errors import ClusterError

RawApiError = ApiException  # the client's own exception, untranslated

BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, CONFLICT, INVALID = 400, 401, 403, 404, 409, 422


class KubernetesError(ClusterError):
    """The API server refused a call: what was being done, and its answer."""

    api_status: int = 0
    api_reason: str = ""  # the HTTP reason phrase ("Forbidden")
    api_message: str = ""  # the Status object's message, else the reason


class KubernetesNotFoundError(KubernetesError):
    pass


class KubernetesForbiddenError(KubernetesError):
    pass


class KubernetesUnauthorizedError(KubernetesError):
    pass


class KubernetesConflictError(KubernetesError):
    pass


class KubernetesInvalidError(KubernetesError):
    pass


_TYPES: dict[int, type[KubernetesError]] = {
    NOT_FOUND: KubernetesNotFoundError,
    FORBIDDEN: KubernetesForbiddenError,
    UNAUTHORIZED: KubernetesUnauthorizedError,
    CONFLICT: KubernetesConflictError,
    BAD_REQUEST: KubernetesInvalidError,
    INVALID: KubernetesInvalidError,
}


def api_exception(status: int, reason: str | None = None, body: bytes = b"") -> ApiException:
    """An ApiException as the client raises it (for a raw response, and for tests)."""
    error = ApiException(status=status, reason=reason)
    error.body = body
    return error


def status_message(error: ApiException) -> str:
    """The API server's own message (the Status object's), else the HTTP reason."""
    body: object = error.body  # bytes as read from the response (str in some callers' hands)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        status = json.loads(body) if isinstance(body, str) and body else None
    except ValueError:
        status = None
    message = status.get("message") if isinstance(status, dict) else None
    return str(message or error.reason or "no reason given")


def translate(error: ApiException, line: str) -> KubernetesError:
    """The project's error for `error`, with the one line `line`."""
    status = int(error.status or 0)
    translated = _TYPES.get(status, KubernetesError)(line)
    translated.api_status = status
    translated.api_reason = str(error.reason or "")
    translated.api_message = status_message(error)
    return translated


def failed(error: ApiException, failing: str) -> KubernetesError:
    """`failing` ("cannot read X") and the API server's reason: "cannot read X: Forbidden"."""
    return translate(error, f"{failing}: {error.reason}")


def refused(error: ApiException, doing: str) -> KubernetesError:
    """The installer's wording: who refused `doing` ("read X") and the API server's message."""
    message = status_message(error)
    if error.status == FORBIDDEN:
        return translate(error, f"not allowed to {doing}: {message}")
    if error.status == UNAUTHORIZED:
        return translate(
            error, f"the API server did not accept the credentials to {doing}: {message}"
        )
    if error.status in (BAD_REQUEST, INVALID):
        return translate(error, f"the API server refused to {doing}: {message}")
    return translate(error, f"cannot {doing}: {error.status} {message}")


@contextmanager
def api_errors(failing: str) -> Iterator[None]:
    """Raise an API error inside as `failed(error, failing)`."""
    try:
        yield
    except ApiException as error:
        raise failed(error, failing) from error


@contextmanager
def api_refusals(doing: str) -> Iterator[None]:
    """Raise an API error inside as `refused(error, doing)`."""
    try:
        yield
    except ApiException as error:
        raise refused(error, doing) from error
