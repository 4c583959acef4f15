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

from kubernetes_asyncio import client

from kubepresence.manager.k8s.errors import api_errors
from kubepresence.manager.webhook.certificates import merged_bundle
from kubepresence.protocol.errors import ClusterError, NotFoundError

log = logging.getLogger(__name__)

WEBHOOK_NAME = "agent-injector.kubepresence.io"
REQUEST_TIMEOUT = 15.0


def configuration_name(namespace: str) -> str:
    return f"kubepresence-agent-injector-{namespace}"


async def install_ca_bundle(api: client.ApiClient, namespace: str, ca_pem: bytes) -> None:
    """Put `ca_pem` (plus the previous CA) into the webhook configuration's caBundle."""
    name = configuration_name(namespace)
    admission = client.AdmissionregistrationV1Api(api)
    doing = f"cannot write the CA bundle of MutatingWebhookConfiguration {name}"
    try:
        with api_errors(doing):
            live: Any = await admission.read_mutating_webhook_configuration(
                name, _request_timeout=REQUEST_TIMEOUT
            )
    except NotFoundError as error:
        raise ClusterError(
            f"{doing}: it does not exist (install the manager with the webhook enabled)"
        ) from error
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
    with api_errors(doing):
        await admission.patch_mutating_webhook_configuration(
            name, patch, _request_timeout=REQUEST_TIMEOUT
        )
    log.info("CA bundle of %s written (%d CAs)", name, bundle.count(b"BEGIN CERTIFICATE"))
