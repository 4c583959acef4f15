"""Unit tests of the PKI writer: chains, identities, SANs, kubeconfigs."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kpcluster import layout, pki


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_identities_and_chain(tmp_path: Path) -> None:
    pki.write_all(tmp_path)
    ca = _cert(tmp_path / "pki" / "ca.crt")
    api = _cert(tmp_path / "pki" / "apiserver.crt")
    assert api.issuer == ca.subject
    pub = ca.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    api.verify_directly_issued_by(ca)
    sans = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(layout.API_SERVICE_IP) in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address(layout.NODE_IP) in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc.cluster.local" in sans.get_values_for_type(x509.DNSName)
    kubelet = _cert(tmp_path / "pki" / "kubelet.crt")
    assert (
        kubelet.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == f"system:node:{layout.NODE_NAME}"
    )
    assert (
        kubelet.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    )
    eku = kubelet.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    front = _cert(tmp_path / "pki" / "front-proxy-client.crt")
    front.verify_directly_issued_by(_cert(tmp_path / "pki" / "front-proxy-ca.crt"))
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o077 == 0


def test_kubeconfigs_embed_their_identity(tmp_path: Path) -> None:
    pki.write_all(tmp_path)
    ws = yaml.safe_load((tmp_path / "workstation.conf").read_text())
    assert ws["clusters"][0]["cluster"]["server"] == "https://10.77.0.1:6443"
    cert = x509.load_pem_x509_certificate(
        base64.b64decode(ws["users"][0]["user"]["client-certificate-data"])
    )
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    )
    ca = x509.load_pem_x509_certificate(
        base64.b64decode(ws["clusters"][0]["cluster"]["certificate-authority-data"])
    )
    cert.verify_directly_issued_by(ca)
