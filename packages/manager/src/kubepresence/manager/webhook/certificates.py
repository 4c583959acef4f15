"""The webhook's TLS: a CA and a serving certificate made at start-up, kept in memory.

The manager makes a fresh CA at every start and writes it into its
MutatingWebhookConfiguration's caBundle (`configuring`); the API server then trusts the
serving certificate. The private keys never leave the process: the manager runs with a
read-only root file system, so the SSL context loads them from a memfd.

The bundle keeps the previous CA as well (`merged_bundle`): during a rolling update the
old manager pod keeps serving with the old CA's certificate until it is gone.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)
CLOCK_SKEW = datetime.timedelta(hours=1)
PEM_END = "-----END CERTIFICATE-----"
KEEP_CAS = 2


@dataclass(frozen=True)
class WebhookCertificate:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def service_names(service: str, namespace: str) -> list[str]:
    """The DNS names the API server may use for the webhook's Service."""
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    ]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate(service: str, namespace: str, now: datetime.datetime) -> WebhookCertificate:
    """A self-signed CA and a serving certificate for `<service>.<namespace>.svc`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"kubepresence webhook CA {namespace}")
    start, end = now - CLOCK_SKEW, now + VALIDITY
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = service_names(service, namespace)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return WebhookCertificate(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def pem_blocks(bundle: str) -> list[str]:
    """The certificates of a PEM bundle, each as its own block."""
    blocks = []
    for part in bundle.split(PEM_END):
        start = part.find("-----BEGIN CERTIFICATE-----")
        if start >= 0:
            blocks.append(part[start:].strip() + "\n" + PEM_END + "\n")
    return blocks


def merged_bundle(new_ca: bytes, current: str, keep: int = KEEP_CAS) -> bytes:
    """The new CA first, then the newest of the CAs already there, `keep` in all."""
    new = new_ca.decode()
    olds = [b for b in pem_blocks(current) if b.strip() != new.strip()]
    return "".join([new, *olds[: keep - 1]]).encode()


def server_context(certificate: WebhookCertificate) -> ssl.SSLContext:
    """A TLS server context holding the certificate and key, loaded without a file system."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    fd = os.memfd_create("kubepresence-webhook", os.MFD_CLOEXEC)
    try:
        os.write(fd, certificate.cert_pem + certificate.key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return context
