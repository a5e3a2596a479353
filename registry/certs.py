"""A development certificate authority and the broker's and devices' certificates.

For test benches and pilots before the operator's own PKI: an EC P-256 CA (10 years), a
server certificate for the broker's host names and addresses, and client certificates whose
common name is the device's MQTT username (for ``require_certificate``). Private keys are
written mode 0600. Production brokers use certificates from the operator's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry.files import write_private

__all__ = ["CertFiles", "make_client_cert", "make_dev_ca", "make_server_cert"]

_CA_DAYS = 3650
_LEAF_DAYS = 825  # the longest TLS clients still accept for a server certificate
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate and its key on disk."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ghgwatch development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write(
    out: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertFiles:
    out.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(out / f"{stem}.key", key_pem.decode())
    (out / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertFiles(out / f"{stem}.crt", out / f"{stem}.key")


def _load(files: CertFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.key}: not an EC key written by ghgwatch certs")
    return cert, key


def make_dev_ca(out: Path, name: str = "ghgwatch development CA") -> CertFiles:
    """A new self-signed CA (``ca.crt``, ``ca.key``) in ``out``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - _BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(out, "ca", cert, key)


def _leaf(
    ca: CertFiles, cn: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - _BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_server_cert(ca: CertFiles, out: Path, hosts: list[str]) -> CertFiles:
    """The broker's certificate (``server.crt``/``.key``) for these names and addresses."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert, key = _leaf(ca, hosts[0], sans, ExtendedKeyUsageOID.SERVER_AUTH)
    return _write(out, "server", cert, key)


def make_client_cert(ca: CertFiles, out: Path, username: str) -> CertFiles:
    """A client certificate whose common name is ``username`` (``<username>.crt``/``.key``)."""
    cert, key = _leaf(ca, username, [], ExtendedKeyUsageOID.CLIENT_AUTH)
    return _write(out, username, cert, key)
