"""Writing the webhook's CA into its MutatingWebhookConfiguration.

The install (Helm chart or userd's builder) creates `kubepresence-agent-injector-<ns>`
with an empty caBundle; the manager fills it at start-up with a JSON patch on the one
webhook entry it serves (checked by name in the same patch, so a concurrent change of the
list fails the patch rather than writing into someone else's entry).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubepresence.manager.webhook.certificates import merged_bundle
from kubepresence.protocol.errors import ClusterError

log = logging.getLogger(__name__)

WEBHOOK_NAME = "agent-injector.kubepresence.io"
REQUEST_TIMEOUT = 15.0


def configuration_name(namespace: str) -> str:
    return f"kubepresence-agent-injector-{namespace}"


def _translate(error: ApiException, doing: str) -> ClusterError:
    return ClusterError(f"cannot {doing}: {error.status} {error.reason}")


async def install_ca_bundle(api: client.ApiClient, namespace: str, ca_pem: bytes) -> None:
    """Put `ca_pem` (plus the previous CA) into the webhook configuration's caBundle."""
    name = configuration_name(namespace)
    admission = client.AdmissionregistrationV1Api(api)
    doing = f"write the CA bundle of MutatingWebhookConfiguration {name}"
    try:
        live: Any = await admission.read_mutating_webhook_configuration(
            name, _request_timeout=REQUEST_TIMEOUT
        )
        webhooks = list(live.webhooks or [])
        index = next((i for i, w in enumerate(webhooks) if w.name == WEBHOOK_NAME), None)
        if index is None:
            raise ClusterError(f"{doing}: it has no webhook named {WEBHOOK_NAME}")
        current = base64.b64decode(webhooks[index].client_config.ca_bundle or "").decode()
        bundle = merged_bundle(ca_pem, current)
        patch = [
            {"op": "test", "path": f"/webhooks/{index}/name", "value": WEBHOOK_NAME},
            {
                "op": "add",
                "path": f"/webhooks/{index}/clientConfig/caBundle",
                "value": base64.b64encode(bundle).decode(),
            },
        ]
        await admission.patch_mutating_webhook_configuration(
            name, patch, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as error:
        if error.status == 404:
            raise ClusterError(
                f"{doing}: it does not exist (install the manager with the webhook enabled)"
            ) from error
        raise _translate(error, doing) from error
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ClusterError(f"{doing}: {error or type(error).__name__}") from error
    log.info("CA bundle of %s written (%d CAs)", name, bundle.count(b"BEGIN CERTIFICATE"))
