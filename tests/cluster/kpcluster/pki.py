"""Certificates, keys and kubeconfigs for the cluster (notes §8.1), written with `cryptography`.

One CA signs everything; client identities follow the default RBAC bindings (system:masters
for admins, system:node:<name> for the kubelet, system:kube-* for the control plane), so no
extra RBAC is needed. ECDSA P-256 keys: fast to generate and accepted by every component.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import layout

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class Leaf:
    """One certificate to issue: its file stem, subject and usage."""

    stem: str
    common_name: str
    organization: str | None = None
    server: bool = False
    client: bool = False
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    ca: str = "ca"


@dataclass(frozen=True)
class KubeconfigSpec:
    """A kubeconfig that embeds one client certificate."""

    filename: str
    leaf: str
    user: str
    server: str = layout.API_URL


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    extra: dict[str, bytes] = field(default_factory=dict)


def leaves(node_name: str, node_ip: str, api_service_ip: str) -> list[Leaf]:
    return [
        Leaf(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns_names=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
                node_name,
            ),
            ips=(api_service_ip, node_ip, "127.0.0.1"),
        ),
        Leaf(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "system:masters",
            client=True,
        ),
        Leaf("kubelet-serving", node_name, server=True, dns_names=(node_name,), ips=(node_ip,)),
        Leaf("front-proxy-client", "front-proxy-client", client=True, ca="front-proxy-ca"),
        Leaf("admin", "kubernetes-admin", "system:masters", client=True),
        Leaf("workstation", "kubepresence-developer", "system:masters", client=True),
        Leaf("controller-manager", "system:kube-controller-manager", client=True),
        Leaf("scheduler", "system:kube-scheduler", client=True),
        Leaf("kubelet", f"system:node:{node_name}", "system:nodes", client=True),
        Leaf("kube-proxy", "system:kube-proxy", client=True),
    ]


KUBECONFIGS = (
    KubeconfigSpec("admin.conf", "admin", "kubernetes-admin"),
    KubeconfigSpec("workstation.conf", "workstation", "kubepresence-developer"),
    KubeconfigSpec(
        "controller-manager.conf", "controller-manager", "system:kube-controller-manager"
    ),
    KubeconfigSpec("scheduler.conf", "scheduler", "system:kube-scheduler"),
    KubeconfigSpec("kubelet.conf", "kubelet", f"system:node:{layout.NODE_NAME}"),
    KubeconfigSpec("kube-proxy.conf", "kube-proxy", "system:kube-proxy"),
)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    # Back-dated a little so a clock a few seconds behind does not reject fresh certificates.
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


def make_ca(cn: str) -> Issued:
    key = _new_key()
    name = _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + VALIDITY * 10)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(leaf: Leaf, ca: Issued) -> Issued:
    key = _new_key()
    usages = []
    if leaf.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if leaf.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(leaf.common_name, leaf.organization))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in leaf.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in leaf.ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def kubeconfig(spec: KubeconfigSpec, ca: x509.Certificate, issued: Issued) -> dict[str, object]:
    cluster = "kubepresence"
    context = f"{spec.user}@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": spec.server,
                    "certificate-authority-data": base64.b64encode(_cert_pem(ca)).decode(),
                },
            }
        ],
        "users": [
            {
                "name": spec.user,
                "user": {
                    "client-certificate-data": base64.b64encode(_cert_pem(issued.cert)).decode(),
                    "client-key-data": base64.b64encode(_key_pem(issued.key)).decode(),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": spec.user}}],
        "current-context": context,
    }


def write_all(config_dir: Path = layout.CONFIG) -> None:
    """Write a fresh PKI under config_dir/pki and the kubeconfigs under config_dir."""
    pki_dir = config_dir / "pki"
    cas = {"ca": make_ca("kubernetes-ca"), "front-proxy-ca": make_ca("front-proxy-ca")}
    for stem, ca in cas.items():
        _write(pki_dir / f"{stem}.crt", _cert_pem(ca.cert), 0o644)
        _write(pki_dir / f"{stem}.key", _key_pem(ca.key), 0o600)
    issued: dict[str, Issued] = {}
    for leaf in leaves(layout.NODE_NAME, layout.NODE_IP, layout.API_SERVICE_IP):
        issued[leaf.stem] = issue(leaf, cas[leaf.ca])
        _write(pki_dir / f"{leaf.stem}.crt", _cert_pem(issued[leaf.stem].cert), 0o644)
        _write(pki_dir / f"{leaf.stem}.key", _key_pem(issued[leaf.stem].key), 0o600)
    sa_key = _new_key()
    _write(pki_dir / "sa.key", _key_pem(sa_key), 0o600)
    _write(
        pki_dir / "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    for spec in KUBECONFIGS:
        doc = kubeconfig(spec, cas["ca"].cert, issued[spec.leaf])
        _write(config_dir / spec.filename, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)
