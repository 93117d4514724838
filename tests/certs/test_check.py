from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import pki
from certs.check import (
    Problem,
    check_ca,
    check_pair,
    describe,
    renewal_time,
    service_dns_names,
)

from .conftest import NAMES, NOW

DAY = timedelta(days=1)


def codes(problems: list[Problem]) -> list[str]:
    return [p.code for p in problems]


def test_service_dns_names() -> None:
    assert service_dns_names("wh", "ns") == ("wh", "wh.ns", "wh.ns.svc", "wh.ns.svc.cluster.local")
    assert service_dns_names("wh", "ns", "corp.local")[-1] == "wh.ns.svc.corp.local"


def test_good_pair_has_no_problems(ca: pki.KeyPair, serving: pki.KeyPair) -> None:
    problems = check_pair(
        serving.cert_pem,
        serving.key_pem,
        now=NOW,
        ca_pem=ca.cert_pem,
        dns_names=NAMES,
        ip_addresses=["127.0.0.1"],
    )
    assert problems == []
    assert check_ca(ca.cert_pem, key_pem=ca.key_pem, now=NOW) == []


def test_describe(serving: pki.KeyPair) -> None:
    info = describe(serving.certificate)
    assert info.dns_names == NAMES
    assert info.ip_addresses == ("127.0.0.1",)
    assert info.is_ca is False
    assert info.not_after == NOW + timedelta(days=365)
    assert info.issuer == "CN=test CA"
    assert info.extended_key_usage == ("serverAuth",)


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (-pki.BACKDATE - timedelta(seconds=1), ["NotYetValid"]),
        (-pki.BACKDATE, []),
        (timedelta(days=365), []),  # notAfter itself is still valid (RFC 5280)
        (timedelta(days=365, seconds=1), ["Expired"]),
    ],
)
def test_validity_boundaries(
    ca: pki.KeyPair, serving: pki.KeyPair, offset: timedelta, expected: list[str]
) -> None:
    problems = check_pair(serving.cert_pem, serving.key_pem, now=NOW + offset, ca_pem=ca.cert_pem)
    assert codes(problems) == expected
    for p in problems:
        assert p.file == "tls.crt"


def test_expired_message_names_file_time_and_fix(ca: pki.KeyPair, serving: pki.KeyPair) -> None:
    (p,) = check_pair(serving.cert_pem, serving.key_pem, now=NOW + 400 * DAY, cert_file="/etc/wh/tls.crt")
    assert str(p).startswith("/etc/wh/tls.crt: Expired: the certificate expired at 2031-06-01T12:00:00Z")
    assert "agentgroup certs generate" in p.message


def test_expires_soon_is_a_warning_at_the_renewal_boundary(serving: pki.KeyPair) -> None:
    renew_at = renewal_time(serving.certificate, 1 / 3)
    before = check_pair(
        serving.cert_pem, serving.key_pem, now=renew_at - timedelta(seconds=1), renew_fraction=1 / 3
    )
    at = check_pair(serving.cert_pem, serving.key_pem, now=renew_at, renew_fraction=1 / 3)
    assert before == []
    assert codes(at) == ["ExpiresSoon"]
    assert at[0].severity == "warning"
    assert str(at[0]).startswith("warning: tls.crt: ExpiresSoon")


def test_renewal_time_is_two_thirds_into_the_lifetime(serving: pki.KeyPair) -> None:
    cert = serving.certificate
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert renewal_time(cert, 1 / 3) == cert.not_valid_before_utc + lifetime * (2 / 3)


def test_wrong_sans_lists_missing_and_present_names(ca: pki.KeyPair, serving: pki.KeyPair) -> None:
    wanted = service_dns_names("agentgroup-webhook", "other-ns")
    (p,) = check_pair(serving.cert_pem, serving.key_pem, now=NOW, dns_names=wanted)
    assert p.code == "WrongSANs"
    assert "agentgroup-webhook.other-ns.svc" in p.message
    assert "it has agentgroup-webhook, agentgroup-webhook.agentgroup-system" in p.message
    assert "agentgroup-webhook" not in p.message.split("does not cover ")[1].split(" (")[0].split(", ")


def test_wrong_ip_san(serving: pki.KeyPair) -> None:
    assert codes(check_pair(serving.cert_pem, serving.key_pem, now=NOW, ip_addresses=["10.0.0.1"])) == [
        "WrongSANs"
    ]


def test_dns_matching_is_case_insensitive_and_honours_wildcards(ca: pki.KeyPair) -> None:
    wild = pki.new_serving_cert(ca, ["*.ns.svc"], valid_for=DAY, now=NOW)
    assert check_pair(wild.cert_pem, wild.key_pem, now=NOW, dns_names=["WH.ns.svc"]) == []
    assert codes(check_pair(wild.cert_pem, wild.key_pem, now=NOW, dns_names=["a.b.ns.svc"])) == ["WrongSANs"]


def test_key_mismatch(ca: pki.KeyPair, serving: pki.KeyPair) -> None:
    other = pki.new_serving_cert(ca, NAMES, valid_for=DAY, now=NOW)
    (p,) = check_pair(serving.cert_pem, other.key_pem, now=NOW)
    assert (p.file, p.code) == ("tls.key", "KeyMismatch")
    assert "does not belong to the certificate in tls.crt" in p.message


def test_not_signed_by_ca(serving: pki.KeyPair) -> None:
    stranger = pki.new_ca("stranger", valid_for=DAY, now=NOW)
    (p,) = check_pair(serving.cert_pem, serving.key_pem, now=NOW, ca_pem=stranger.cert_pem)
    assert (p.file, p.code) == ("tls.crt", "NotSignedByCA")
    assert "CN=test CA" in p.message
    assert "ca.crt" in p.message


def test_signed_by_any_ca_of_a_bundle(ca: pki.KeyPair, serving: pki.KeyPair) -> None:
    stranger = pki.new_ca("stranger", valid_for=DAY, now=NOW)
    assert (
        check_pair(serving.cert_pem, serving.key_pem, now=NOW, ca_pem=stranger.cert_pem + ca.cert_pem) == []
    )


def test_leaf_plus_intermediate_chain() -> None:
    root = pki.new_ca("root", valid_for=DAY * 10, now=NOW)
    # An intermediate is an ordinary CA signed by the root; build it with the public API's building blocks.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    root_key = serialization.load_pem_private_key(root.key_pem, password=None)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    mid_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mid")]))
        .issuer_name(root.certificate.subject)
        .public_key(mid_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY * 5)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    mid = pki.KeyPair(
        mid_cert.public_bytes(serialization.Encoding.PEM),
        mid_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    leaf = pki.new_serving_cert(mid, ["svc"], valid_for=DAY, now=NOW)
    assert check_pair(leaf.cert_pem + mid.cert_pem, leaf.key_pem, now=NOW, ca_pem=root.cert_pem) == []
    assert codes(check_pair(leaf.cert_pem, leaf.key_pem, now=NOW, ca_pem=root.cert_pem)) == ["NotSignedByCA"]


@pytest.mark.parametrize(
    ("cert_pem", "key_pem", "expected"),
    [
        (b"", None, [("tls.crt", "Empty")]),
        (b"garbage\n", None, [("tls.crt", "CorruptPEM")]),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            None,
            [("tls.crt", "CorruptPEM")],
        ),
        (None, b"", [("tls.key", "Empty")]),
        (None, b"not a key", [("tls.key", "CorruptPEM")]),
        (
            None,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            [("tls.key", "CorruptPEM")],
        ),
    ],
)
def test_corrupt_pem(
    serving: pki.KeyPair, cert_pem: bytes | None, key_pem: bytes | None, expected: list[tuple[str, str]]
) -> None:
    problems = check_pair(
        serving.cert_pem if cert_pem is None else cert_pem,
        serving.key_pem if key_pem is None else key_pem,
        now=NOW,
    )
    assert [(p.file, p.code) for p in problems] == expected
    assert all(p.severity == "error" for p in problems)


def test_truncated_certificate(serving: pki.KeyPair) -> None:
    truncated = serving.cert_pem[: len(serving.cert_pem) // 2] + b"\n-----END CERTIFICATE-----\n"
    assert codes(check_pair(truncated, serving.key_pem, now=NOW)) == ["CorruptPEM"]


def test_swapped_files_say_so(serving: pki.KeyPair) -> None:
    problems = check_pair(serving.key_pem, serving.cert_pem, now=NOW)
    assert codes(problems) == ["CorruptPEM", "CorruptPEM"]
    assert all("swapped" in p.message for p in problems)


def test_encrypted_key(serving: pki.KeyPair) -> None:
    key = serialization.load_pem_private_key(serving.key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (p,) = check_pair(serving.cert_pem, encrypted, now=NOW)
    assert (p.file, p.code) == ("tls.key", "EncryptedKey")


def test_client_cert_is_not_a_serving_cert(ca: pki.KeyPair) -> None:
    client = pki.new_client_cert(ca, "admin", valid_for=DAY, now=NOW)
    assert codes(check_pair(client.cert_pem, client.key_pem, now=NOW)) == ["NotServerAuth", "NoSANs"]


def test_ca_as_serving_cert(ca: pki.KeyPair) -> None:
    assert "IsACA" in codes(check_pair(ca.cert_pem, ca.key_pem, now=NOW))


def test_check_ca_problems(ca: pki.KeyPair, serving: pki.KeyPair) -> None:
    assert codes(check_ca(serving.cert_pem, now=NOW)) == ["NotACA"]
    assert codes(check_ca(ca.cert_pem, now=NOW + 3651 * DAY)) == ["Expired"]
    assert codes(check_ca(b"junk", now=NOW, file="/x/ca.crt")) == ["CorruptPEM"]
    other = pki.new_ca("other", valid_for=DAY, now=NOW)
    (p,) = check_ca(ca.cert_pem, key_pem=other.key_pem, now=NOW)
    assert (p.file, p.code) == ("ca.key", "KeyMismatch")


def test_old_ca_in_bundle_may_lapse(ca: pki.KeyPair) -> None:
    old = pki.new_ca("old", valid_for=DAY, now=NOW - 10 * DAY)
    problems = check_ca(ca.cert_pem + old.cert_pem, now=NOW)
    assert [(p.code, p.severity) for p in problems] == [("ExpiredInBundle", "warning")]
    assert codes(check_ca(old.cert_pem + ca.cert_pem, now=NOW)) == ["Expired"]


label = st.from_regex(r"[a-z]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)


@settings(max_examples=25, deadline=None)
@given(service=label, namespace=label)
def test_generated_certificates_pass_their_own_check(ca: pki.KeyPair, service: str, namespace: str) -> None:
    names = service_dns_names(service, namespace)
    leaf = pki.new_serving_cert(ca, names, valid_for=DAY, now=NOW)
    assert check_pair(leaf.cert_pem, leaf.key_pem, now=NOW, ca_pem=ca.cert_pem, dns_names=names) == []
    other = service_dns_names(service + "x", namespace)
    assert codes(check_pair(leaf.cert_pem, leaf.key_pem, now=NOW, dns_names=other)) == ["WrongSANs"]
