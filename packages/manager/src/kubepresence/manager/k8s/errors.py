"""Kubernetes API errors, translated once into the project's categories.

Every call the manager makes to the API server goes through `api_errors(doing)`: an
ApiException (or a failure to reach the server at all) comes out as a KubepresenceError
whose one line says what the manager was doing and what the API server answered:

| the API server says                    | error                          |
|----------------------------------------|--------------------------------|
| 404 Not Found                          | NotFoundError (user: the name) |
| 400 Bad Request, 422 Invalid           | UserError (what was asked)     |
| 401, 403 (RBAC), 409, 410, 429, 5xx …  | ClusterError                   |
| nothing (connection, timeout)          | ClusterError                   |

The status stays on the error (`KubernetesError.api_status`) for the few callers that act
on one (e.g. a missing ServiceCIDR API on an older cluster). Only this module names the
client's exception (a lint rule bans it elsewhere); `api_exception` makes one from a raw
response (and for tests), `RawApiError` is its type for tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from kubepresence.protocol.errors import ClusterError, KubepresenceError, NotFoundError, UserError

RawApiError = ApiException  # the client's own exception, untranslated

NOT_FOUND = 404
GONE = 410
_USER_STATUSES = frozenset({400, 422})
_CLUSTER_HINTS = {
    401: "the manager's credentials were refused",
    403: "forbidden: the manager's RBAC does not allow it",
    429: "the API server is throttling the manager",
}


class KubernetesError(KubepresenceError):
    """Mixin data: the HTTP status the API server answered with (0: no answer)."""

    api_status: int = 0


class KubernetesNotFoundError(NotFoundError, KubernetesError):
    pass


class KubernetesUserError(UserError, KubernetesError):
    pass


class KubernetesClusterError(ClusterError, KubernetesError):
    pass


def api_exception(status: int, reason: str | None = None, body: bytes = b"") -> ApiException:
    """An ApiException as the client raises it, for a response read raw."""
    error = ApiException(status=status, reason=reason)
    error.body = body
    return error


def api_message(error: ApiException) -> str:
    """The API server's own message (the Status object's), else the HTTP reason."""
    body: object = error.body  # bytes as read from the response (str in some callers' hands)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(error.reason or f"HTTP {error.status}")


def translate(error: ApiException, doing: str) -> KubernetesError:
    """The project's error for an ApiException met while `doing` (e.g. "cannot read X")."""
    status = int(error.status or 0)
    message = api_message(error)
    hint = _CLUSTER_HINTS.get(status)
    line = f"{doing}: {message}" if hint is None else f"{doing}: {hint} ({message})"
    translated: KubernetesError
    if status == NOT_FOUND:
        translated = KubernetesNotFoundError(line)
    elif status in _USER_STATUSES:
        translated = KubernetesUserError(line)
    else:
        translated = KubernetesClusterError(line)
    translated.api_status = status
    return translated


@contextmanager
def api_errors(doing: str) -> Iterator[None]:
    """Raise every Kubernetes or connection failure inside as the project's error."""
    try:
        yield
    except ApiException as error:
        raise translate(error, doing) from error
    except TimeoutError as error:
        late = KubernetesClusterError(f"{doing}: the API server did not answer in time")
        raise late from error
    except (aiohttp.ClientError, OSError) as error:
        unreachable = KubernetesClusterError(
            f"{doing}: the API server cannot be reached ({type(error).__name__}: {error})"
        )
        raise unreachable from error
