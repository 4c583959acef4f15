"""Whether the namespaces a session names exist, asked before anything is installed."""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
from kubernetes_asyncio import client

from kubepresence.protocol.errors import ClusterError, UserError
from kubepresence.userd.k8s.errors import (
    KubernetesForbiddenError,
    KubernetesNotFoundError,
    api_refusals,
)
from kubepresence.userd.k8s.installing import REQUEST_TIMEOUT


async def require(api: client.ApiClient, names: Iterable[str], context: str) -> None:
    """UserError naming the first namespace that does not exist. A user who may not read
    namespaces may still work in them: a 403 is no answer, and nothing is refused for it."""
    core = client.CoreV1Api(api)
    for name in dict.fromkeys(names):
        try:
            with api_refusals(f"read namespace {name}"):
                await core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT)
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise ClusterError(
                f"cannot reach the API server to read namespace {name}: {reason}"
            ) from error
        except KubernetesNotFoundError:
            raise UserError(
                f"namespace {name!r} does not exist in context {context!r}"
                " (kubectl get namespaces lists those that do)"
            ) from None
        except KubernetesForbiddenError:
            continue
