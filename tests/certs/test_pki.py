from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certs import pki

from .conftest import NAMES, NOW


def _verify(
    ca: pki.KeyPair, leaf: pki.KeyPair, name: x509.DNSName | x509.IPAddress, at: datetime = NOW
) -> None:
    verifier = PolicyBuilder().store(Store([ca.certificate])).time(at).build_server_verifier(name)
    verifier.verify(leaf.certificate, [])


def test_ca_is_a_p256_ca_with_cert_sign(ca: pki.KeyPair) -> None:
    cert = ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    key = load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert ca.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)


def test_validity_is_backdated_and_ends_after_valid_for(ca: pki.KeyPair) -> None:
    cert = ca.certificate
    assert cert.not_valid_before_utc == NOW - pki.BACKDATE
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)


def test_short_validity_backdates_a_tenth_only() -> None:
    short = pki.new_ca("short", valid_for=timedelta(seconds=60), now=NOW)
    assert short.certificate.not_valid_before_utc == NOW - timedelta(seconds=6)
    assert short.certificate.not_valid_after_utc == NOW + timedelta(seconds=60)


def test_serving_cert_has_sans_server_auth_and_chains(ca: pki.KeyPair, serving: pki.KeyPair) -> None:
    cert = serving.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(NAMES)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.issuer == ca.certificate.subject
    for name in NAMES:
        _verify(ca, serving, x509.DNSName(name))
    _verify(ca, serving, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    with pytest.raises(VerificationError, match="subjectAltName"):
        _verify(ca, serving, x509.DNSName("other.agentgroup-system.svc"))


def test_serving_cert_never_outlives_its_ca() -> None:
    short_ca = pki.new_ca("short", valid_for=timedelta(days=30), now=NOW)
    leaf = pki.new_serving_cert(short_ca, ["svc"], valid_for=timedelta(days=365), now=NOW)
    assert leaf.certificate.not_valid_after_utc == short_ca.certificate.not_valid_after_utc


def test_client_cert_for_kube_admin(ca: pki.KeyPair) -> None:
    admin = pki.new_client_cert(
        ca, "admin", organizations=["system:masters"], valid_for=timedelta(days=1), now=NOW
    )
    cert = admin.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    cert.verify_directly_issued_by(ca.certificate)


def test_real_tls_handshake_with_python_ssl(tmp_path: Path) -> None:
    """The files work for an actual TLS server and a hostname-checking client (in memory, no socket).

    OpenSSL checks validity against the wall clock, so these are minted now.
    """
    ca = pki.new_ca("handshake CA", valid_for=timedelta(days=1))
    serving = pki.new_serving_cert(ca, NAMES, valid_for=timedelta(hours=1))
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=NAMES[2])
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert done == {"client": True, "server": True}
    peer = client.getpeercert()
    assert peer is not None
    assert peer["subject"] == ((("commonName", NAMES[0]),),)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda ca: pki.new_ca("x", valid_for=timedelta(0)), ValueError),
        (lambda ca: pki.new_ca("x", valid_for=timedelta(days=1), now=datetime(2030, 1, 1)), ValueError),
        (lambda ca: pki.new_serving_cert(ca, [], valid_for=timedelta(days=1)), ValueError),
        (lambda ca: pki.new_serving_cert(ca, "svc", valid_for=timedelta(days=1)), TypeError),
        (
            lambda ca: pki.new_serving_cert(ca, ["svc"], ip_addresses=["nope"], valid_for=timedelta(days=1)),
            ValueError,
        ),
        (
            lambda ca: pki.new_client_cert(ca, "a", organizations="org", valid_for=timedelta(days=1)),
            TypeError,
        ),
    ],
)
def test_bad_arguments_are_rejected(
    ca: pki.KeyPair, call: Callable[[pki.KeyPair], object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        call(ca)
