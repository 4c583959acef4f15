"""The webhook's certificates and its HTTPS server, on 127.0.0.1.

Scenarios:
- the serving certificate verifies against the generated CA for the Service's DNS name
  (as the API server checks it) and not for another name;
- the CA bundle keeps the new CA first and one previous CA;
- an AdmissionReview posted over TLS gets the injection patch for an enabled pod, "allowed,
  no patch" for a plain pod and for garbage, and a crash inside the handler still allows.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from kubepresence.manager.core.injection import InjectionSettings
from kubepresence.manager.webhook import certificates, serving
from kubepresence.manager.webhook.certificates import merged_bundle, pem_blocks

NOW = datetime.datetime(2026, 11, 26, tzinfo=datetime.UTC)
SETTINGS = InjectionSettings(agent_image="localhost/agent:1", manager_namespace="kp")


@pytest.fixture(scope="module")
def cert() -> certificates.WebhookCertificate:
    return certificates.generate("kubepresence-manager", "kp", NOW)


def test_serving_certificate_names_the_service(cert: certificates.WebhookCertificate) -> None:
    served = x509.load_pem_x509_certificate(cert.cert_pem)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [
        "kubepresence-manager.kp.svc",
        "kubepresence-manager.kp.svc.cluster.local",
        "kubepresence-manager.kp",
        "kubepresence-manager",
    ]
    ca = x509.load_pem_x509_certificate(cert.ca_pem)
    assert served.issuer == ca.subject
    assert served.not_valid_before_utc < NOW < served.not_valid_after_utc
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_bundle_keeps_the_new_ca_first_and_one_previous(
    cert: certificates.WebhookCertificate,
) -> None:
    other = certificates.generate("kubepresence-manager", "kp", NOW).ca_pem
    third = certificates.generate("kubepresence-manager", "kp", NOW).ca_pem
    assert merged_bundle(cert.ca_pem, "") == cert.ca_pem
    two = merged_bundle(other, cert.ca_pem.decode())
    assert pem_blocks(two.decode()) == [other.decode(), cert.ca_pem.decode()]
    # Restarting again: the newest and the one before it; the oldest goes.
    assert pem_blocks(merged_bundle(third, two.decode()).decode()) == [
        third.decode(),
        other.decode(),
    ]
    # The same CA twice is kept once.
    assert merged_bundle(other, two.decode()).decode().count("BEGIN CERTIFICATE") == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Webhook:
    def __init__(self, port: int, ca_pem: bytes) -> None:
        self.url = f"https://127.0.0.1:{port}{serving.PATH}"
        self.client_tls = ssl.create_default_context(cadata=ca_pem.decode())
        # The API server dials the Service name; here, 127.0.0.1 stands in for it.
        self.server_name = "kubepresence-manager.kp.svc"

    async def post(self, body: bytes) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(ssl=self.client_tls)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                self.url,
                data=body,
                headers={"Host": self.server_name, "Content-Type": "application/json"},
                server_hostname=self.server_name,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response,
        ):
            assert response.status == 200
            return dict(await response.json())


@pytest.fixture
async def webhook(cert: certificates.WebhookCertificate) -> AsyncIterator[Webhook]:
    port = _free_port()
    runner = await serving.serve_webhook(
        SETTINGS, "127.0.0.1", port, certificates.server_context(cert)
    )
    yield Webhook(port, cert.ca_pem)
    await runner.cleanup()


def review_of(annotations: dict[str, str]) -> bytes:
    pod = {
        "metadata": {"annotations": annotations},
        "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 80}]}]},
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": "shop",
                "object": pod,
            },
        }
    ).encode()


async def test_reviews_over_tls(webhook: Webhook) -> None:
    answer = await webhook.post(review_of({"kubepresence.io/inject-traffic-agent": "enabled"}))
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == (
        "u-1",
        True,
        "JSONPatch",
    )
    patch = json.loads(base64.b64decode(response["patch"]))
    assert any(op["path"] == "/spec/containers/-" for op in patch)

    plain = await webhook.post(review_of({}))
    assert plain["response"] == {"uid": "u-1", "allowed": True}
    garbage = await webhook.post(b"\x00not json")
    assert garbage["response"] == {"uid": "", "allowed": True}


async def test_a_crash_inside_still_allows(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: bytes, settings: InjectionSettings) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(serving, "review", broken)
    answer = await webhook.post(review_of({"kubepresence.io/inject-traffic-agent": "enabled"}))
    assert answer["response"] == {"uid": "u-1", "allowed": True}


async def test_wrong_name_is_refused_by_tls(cert: certificates.WebhookCertificate) -> None:
    port = _free_port()
    runner = await serving.serve_webhook(
        SETTINGS, "127.0.0.1", port, certificates.server_context(cert)
    )
    try:
        tls = ssl.create_default_context(cadata=cert.ca_pem.decode())

        async def connect() -> None:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, server_hostname="kubepresence-manager.other.svc"
            )
            writer.close()

        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.wait_for(connect(), 5)
    finally:
        await runner.cleanup()
