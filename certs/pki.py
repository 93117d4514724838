"""Certificate generation: a CA, serving certificates and client certificates.

All keys are ECDSA P-256; private keys are PEM-encoded PKCS8 without a password.
``notBefore`` is backdated by :data:`BACKDATE` (at most a tenth of the
validity, so that second-long test certificates keep a sane lifetime) so that a
certificate minted on one node is already valid on another whose clock runs
slightly behind.
``now`` is an injectable clock so that tests never depend on wall time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BACKDATE",
    "KeyPair",
    "new_ca",
    "new_client_cert",
    "new_serving_cert",
]

#: How far ``notBefore`` lies before ``now`` (tolerates clock skew between nodes).
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS8) private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca_signer(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = ca.certificate
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("CA key must be an ECDSA private key")
    return cert, key


def _validity(valid_for: timedelta, now: datetime | None) -> tuple[datetime, datetime]:
    if valid_for <= timedelta(0):
        raise ValueError("valid_for must be positive")
    start = _utc(now)
    return start - min(BACKDATE, valid_for / 10), start + valid_for


def new_ca(common_name: str, *, valid_for: timedelta, now: datetime | None = None) -> KeyPair:
    """Self-signed CA: ECDSA P-256, ``CA:TRUE`` (pathlen 0), keyCertSign + cRLSign."""
    key = _new_key()
    not_before, not_after = _validity(valid_for, now)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
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
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _leaf(
    ca: KeyPair,
    subject: x509.Name,
    *,
    eku: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None,
    valid_for: timedelta,
    now: datetime | None,
) -> KeyPair:
    ca_cert, ca_key = _ca_signer(ca)
    key = _new_key()
    not_before, not_after = _validity(valid_for, now)
    # Never outlive the issuer: a leaf valid past its CA fails verification anyway.
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_serving_cert(
    ca: KeyPair,
    dns_names: Sequence[str],
    *,
    ip_addresses: Sequence[str] = (),
    valid_for: timedelta,
    now: datetime | None = None,
) -> KeyPair:
    """TLS server certificate (serverAuth) signed by ``ca`` with the given SANs.

    The subject CN is the first DNS name (or first IP) for readability only;
    clients verify the SANs.
    """
    if isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise TypeError("dns_names and ip_addresses must be sequences of strings, not a string")
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    general += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cn = dns_names[0] if dns_names else ip_addresses[0]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])])
    return _leaf(
        ca,
        subject,
        eku=ExtendedKeyUsageOID.SERVER_AUTH,
        san=x509.SubjectAlternativeName(general),
        valid_for=valid_for,
        now=now,
    )


def new_client_cert(
    ca: KeyPair,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    valid_for: timedelta,
    now: datetime | None = None,
) -> KeyPair:
    """TLS client certificate (clientAuth); Kubernetes maps CN to user and O to groups."""
    if isinstance(organizations, str):
        raise TypeError("organizations must be a sequence of strings, not a string")
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return _leaf(
        ca,
        x509.Name(attrs),
        eku=ExtendedKeyUsageOID.CLIENT_AUTH,
        san=None,
        valid_for=valid_for,
        now=now,
    )
