"""Loading and checking certificates: pure functions returning every problem found.

A :class:`Problem` names the file (or Secret key) at fault, a stable code, and a
message that says what is wrong and how to fix it. Nothing here raises on bad
input; callers decide whether a problem is fatal.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "CertInfo",
    "PrivateKey",
    "Problem",
    "check_ca",
    "check_pair",
    "describe",
    "fingerprint",
    "issued_by",
    "key_matches",
    "parse_certificates",
    "parse_private_key",
    "renewal_time",
    "service_dns_names",
]

PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)

Severity = Literal["error", "warning"]

_REGENERATE = "regenerate it (agentgroup certs generate) or provide a matching file"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a certificate file; ``str()`` gives ``file: Code: message``."""

    file: str
    code: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{self.file}: {self.code}: {self.message}"


@dataclass(frozen=True)
class CertInfo:
    """What ``agentgroup certs check`` prints about one certificate."""

    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool
    sha256: str
    extended_key_usage: tuple[str, ...] = field(default=())


def service_dns_names(service: str, namespace: str, cluster_domain: str = "cluster.local") -> tuple[str, ...]:
    """The four names a client may use to reach ``service`` in ``namespace``."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    )


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _sans(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(ext.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))
    return dns, ips


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _ekus(cert: x509.Certificate) -> tuple[x509.ObjectIdentifier, ...]:
    try:
        return tuple(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return ()


_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


def describe(cert: x509.Certificate) -> CertInfo:
    dns, ips = _sans(cert)
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns,
        ip_addresses=ips,
        is_ca=_is_ca(cert),
        sha256=fingerprint(cert),
        extended_key_usage=tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in _ekus(cert)),
    )


def renewal_time(cert: x509.Certificate, renew_fraction: float) -> datetime:
    """The instant from which at most ``renew_fraction`` of the lifetime remains."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - lifetime * renew_fraction


def parse_certificates(pem: bytes, file: str) -> tuple[list[x509.Certificate], list[Problem]]:
    """All certificates in a PEM file (a bundle may hold several)."""
    if not pem.strip():
        return [], [Problem(file, "Empty", f"the file is empty; {_REGENERATE}")]
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        hint = " (it holds a private key: are the files swapped?)" if b"PRIVATE KEY-----" in pem else ""
        return [], [
            Problem(file, "CorruptPEM", f"no PEM 'CERTIFICATE' block found{hint}; {_REGENERATE}"),
        ]
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        return [], [Problem(file, "CorruptPEM", f"cannot parse the certificate ({e}); {_REGENERATE}")]
    return certs, []


def parse_private_key(pem: bytes, file: str) -> tuple[PrivateKey | None, list[Problem]]:
    if not pem.strip():
        return None, [Problem(file, "Empty", f"the file is empty; {_REGENERATE}")]
    if b"PRIVATE KEY-----" not in pem:
        hint = " (it holds a certificate: are the files swapped?)" if b"CERTIFICATE-----" in pem else ""
        return None, [Problem(file, "CorruptPEM", f"no PEM private key block found{hint}; {_REGENERATE}")]
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        return None, [
            Problem(file, "EncryptedKey", "the key is password-protected; provide an unencrypted key"),
        ]
    except (ValueError, UnsupportedAlgorithm) as e:
        return None, [Problem(file, "CorruptPEM", f"cannot parse the private key ({e}); {_REGENERATE}")]
    if not isinstance(key, PrivateKey):
        return None, [Problem(file, "UnsupportedKey", f"unsupported key type {type(key).__name__}")]
    return key, []


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True if ``ca`` signed ``cert`` (signature and issuer name checked)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):  # TypeError: unsupported issuer key type
        return False
    return True


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_problems(
    cert: x509.Certificate, file: str, now: datetime, what: str, renew_fraction: float | None
) -> list[Problem]:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < nb:
        return [
            Problem(
                file,
                "NotYetValid",
                f"{what} is not valid before {_fmt(nb)} (now {_fmt(now)}); "
                "check this machine's clock, or regenerate it",
            )
        ]
    if now > na:  # RFC 5280: valid through notAfter, inclusive
        return [Problem(file, "Expired", f"{what} expired at {_fmt(na)} (now {_fmt(now)}); {_REGENERATE}")]
    if renew_fraction is not None and now >= renewal_time(cert, renew_fraction):
        left = na - now
        return [
            Problem(
                file,
                "ExpiresSoon",
                f"{what} expires at {_fmt(na)} ({_human(left)} left); renew it soon",
                severity="warning",
            )
        ]
    return []


def _human(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s >= 2 * 86400:
        return f"{s // 86400}d"
    if s >= 2 * 3600:
        return f"{s // 3600}h"
    if s >= 120:
        return f"{s // 60}m"
    return f"{s}s"


def check_ca(
    ca_pem: bytes,
    *,
    now: datetime,
    file: str = "ca.crt",
    key_pem: bytes | None = None,
    key_file: str = "ca.key",
    renew_fraction: float | None = None,
) -> list[Problem]:
    """Check a CA bundle; with ``key_pem``, also that the first CA in the bundle owns that key."""
    certs, problems = parse_certificates(ca_pem, file)
    for i, cert in enumerate(certs):
        what = "the CA certificate"
        if len(certs) > 1:
            what = f"CA certificate #{i + 1} ({cert.subject.rfc4514_string()})"
        if not _is_ca(cert):
            problems.append(
                Problem(file, "NotACA", f"{what} lacks basicConstraints CA:TRUE; use the CA's certificate")
            )
        if i == 0:
            problems += _time_problems(cert, file, now, what, renew_fraction)
        elif now > cert.not_valid_after_utc:
            # Only the first (current) CA must be valid; an old one kept for overlap lapses harmlessly.
            problems.append(
                Problem(
                    file, "ExpiredInBundle", f"{what} has expired; harmless, remove it", severity="warning"
                )
            )
    if key_pem is not None:
        key, key_problems = parse_private_key(key_pem, key_file)
        problems += key_problems
        if key is not None and certs and not key_matches(certs[0], key):
            problems.append(
                Problem(
                    key_file,
                    "KeyMismatch",
                    f"this key does not belong to the first certificate in {file}; "
                    "put the matching CA key here or regenerate both",
                )
            )
    return problems


def check_pair(
    cert_pem: bytes,
    key_pem: bytes,
    *,
    now: datetime,
    ca_pem: bytes | None = None,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    cert_file: str = "tls.crt",
    key_file: str = "tls.key",
    ca_file: str = "ca.crt",
    renew_fraction: float | None = None,
) -> list[Problem]:
    """Every problem with a serving certificate and its key.

    Checks: both parse; the key belongs to the certificate; the certificate is
    valid at ``now``; it is for serverAuth; its SANs cover ``dns_names`` and
    ``ip_addresses``; with ``ca_pem``, a CA in that bundle signed it. With
    ``renew_fraction``, a certificate past its renewal time gets a warning.
    """
    certs, problems = parse_certificates(cert_pem, cert_file)
    key, key_problems = parse_private_key(key_pem, key_file)
    problems += key_problems
    if not certs:
        return problems
    leaf = certs[0]
    if key is not None and not key_matches(leaf, key):
        problems.append(
            Problem(
                key_file,
                "KeyMismatch",
                f"this private key does not belong to the certificate in {cert_file}; "
                "use the key generated with that certificate, or regenerate both",
            )
        )
    if _is_ca(leaf):
        problems.append(
            Problem(
                cert_file,
                "IsACA",
                "the first certificate is a CA, not a serving certificate; put the leaf first",
            )
        )
    problems += _time_problems(leaf, cert_file, now, "the certificate", renew_fraction)
    ekus = _ekus(leaf)
    if ekus and ExtendedKeyUsageOID.SERVER_AUTH not in ekus:
        problems.append(
            Problem(cert_file, "NotServerAuth", "the extended key usage lacks serverAuth; regenerate it")
        )
    have_dns, have_ips = _sans(leaf)
    if not have_dns and not have_ips:
        problems.append(
            Problem(
                cert_file,
                "NoSANs",
                "the certificate has no subjectAltName (clients ignore the CN); regenerate it with --service",
            )
        )
    else:
        missing = [n for n in dns_names if not _dns_covered(n, have_dns)]
        missing += [ip for ip in ip_addresses if str(ipaddress.ip_address(ip)) not in have_ips]
        if missing:
            problems.append(
                Problem(
                    cert_file,
                    "WrongSANs",
                    f"the certificate does not cover {', '.join(missing)} "
                    f"(it has {', '.join(have_dns + have_ips)}); "
                    "regenerate it for the right service and namespace",
                )
            )
    if ca_pem is not None:
        cas, ca_problems = parse_certificates(ca_pem, ca_file)
        problems += ca_problems
        if cas:
            chain = certs[1:]  # intermediates, if the file carries any
            if not any(issued_by(leaf, ca) for ca in cas) and not any(
                issued_by(leaf, mid) and any(issued_by(mid, ca) for ca in cas) for mid in chain
            ):
                problems.append(
                    Problem(
                        cert_file,
                        "NotSignedByCA",
                        f"the certificate (issuer {leaf.issuer.rfc4514_string()}) was not signed by any CA "
                        f"in {ca_file}; regenerate it with that CA, or provide the CA that signed it",
                    )
                )
    return problems


def _dns_covered(name: str, sans: Sequence[str]) -> bool:
    name = name.lower().rstrip(".")
    for san in sans:
        san = san.lower().rstrip(".")
        if san == name:
            return True
        if san.startswith("*.") and "." in name and name.split(".", 1)[1] == san[2:]:
            return True
    return False
