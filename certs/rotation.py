"""Self-managed certificate rotation: the decisions, as pure functions.

The rotator keeps everything in ONE Secret (type ``kubernetes.io/tls``) shared
by all webhook replicas:

====================  ==========================================================
``tls.crt/tls.key``   the serving certificate and its key
``ca.crt``            the trust bundle injected as ``caBundle``: the signing CA
                      first, then CAs being retired
``ca.key``            the signing CA's key
====================  ==========================================================

plus annotations: an ownership marker (a Secret without it is never touched),
the time a CA last entered the bundle, and the time ``tls.crt`` last changed.

Why the caBundle always trusts what any replica serves -- a CA rotation takes
three separate writes:

1. *New CA*: a new CA becomes the signer and is put in front of the bundle; the
   serving certificate is unchanged (its CA stays in the bundle). The rotator
   then injects the bundle into the webhook configuration.
2. *Switch*: only when the new CA has been in the bundle for ``propagation``
   (time for every kube-apiserver to see the injected bundle) AND the webhook
   configuration's caBundle is seen to contain it, is a serving certificate
   issued by the new CA. Replicas pick it up on their next Secret read.
3. *Retire*: only when that serving certificate has been in the Secret for
   ``overlap`` (longer than the time every replica needs to re-read the Secret
   and reload its files) are the old CAs dropped from the bundle.

A time-based overlap was chosen over per-replica acknowledgements because
replicas come and go (a dead pod would block the rotation forever), and every
replica re-reads the Secret on a fixed interval, which bounds the lag.

A serving certificate that is unusable (expired, wrong SANs, key mismatch,
corrupt, unknown CA) is replaced at once, since serving it is already failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs import pki
from certs.check import (
    Problem,
    check_pair,
    fingerprint,
    issued_by,
    key_matches,
    parse_certificates,
    parse_private_key,
    renewal_time,
)

__all__ = [
    "ANNOTATION_MANAGED_BY",
    "ANNOTATION_SERVING_UPDATED",
    "ANNOTATION_TRUST_UPDATED",
    "CA_CRT",
    "CA_KEY",
    "MANAGED_BY",
    "TLS_CRT",
    "TLS_KEY",
    "RotationPlan",
    "RotationSettings",
    "SecretContent",
    "apply_plan",
    "format_time",
    "parse_time",
    "plan_rotation",
]

TLS_CRT = "tls.crt"
TLS_KEY = "tls.key"
CA_CRT = "ca.crt"
CA_KEY = "ca.key"

ANNOTATION_MANAGED_BY = "runtime.agentcube.io/certs-managed-by"
ANNOTATION_TRUST_UPDATED = "runtime.agentcube.io/certs-trust-updated-at"
ANNOTATION_SERVING_UPDATED = "runtime.agentcube.io/certs-serving-updated-at"
MANAGED_BY = "agentgroup-rotator"


@dataclass(frozen=True)
class RotationSettings:
    """What to issue and when to rotate.

    ``renew_fraction``: a certificate is replaced once at most this fraction of
    its lifetime remains (CA and serving certificate alike).
    """

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ()
    ca_validity: timedelta = timedelta(days=3650)
    serving_validity: timedelta = timedelta(days=365)
    renew_fraction: float = 1 / 3
    propagation: timedelta = timedelta(minutes=1)
    overlap: timedelta = timedelta(minutes=10)
    ca_common_name: str = "agentgroup-webhook-ca"

    def __post_init__(self) -> None:
        errors = []
        if not self.dns_names and not self.ip_addresses:
            errors.append("at least one DNS name or IP address is required")
        if self.ca_validity <= timedelta(0) or self.serving_validity <= timedelta(0):
            errors.append("validities must be positive")
        if not 0 < self.renew_fraction < 1:
            errors.append(f"renew_fraction must be between 0 and 1, not {self.renew_fraction}")
        elif self.propagation >= self.serving_validity * self.renew_fraction:
            errors.append(
                f"propagation ({self.propagation}) must be shorter than the serving renewal window "
                f"({self.serving_validity * self.renew_fraction}): raise the serving validity"
            )
        elif self.propagation + self.overlap >= self.ca_validity * self.renew_fraction:
            errors.append(
                f"propagation + overlap ({self.propagation + self.overlap}) must be shorter than the CA "
                f"renewal window ({self.ca_validity * self.renew_fraction}): raise the CA validity"
            )
        if self.propagation < timedelta(0) or self.overlap < timedelta(0):
            errors.append("propagation and overlap must not be negative")
        if errors:
            raise ValueError("invalid rotation settings: " + "; ".join(errors))


@dataclass(frozen=True)
class SecretContent:
    """The parts of the Secret the rotator reads and writes (data already base64-decoded)."""

    data: Mapping[str, bytes]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        return self.annotations.get(ANNOTATION_MANAGED_BY) == MANAGED_BY


@dataclass(frozen=True)
class RotationPlan:
    """What to change in the Secret now, why, and when to look again."""

    new_ca: bool = False
    new_serving: bool = False
    retire_old_cas: bool = False
    reasons: tuple[str, ...] = ()
    next_check: datetime | None = None

    @property
    def changes(self) -> bool:
        return self.new_ca or self.new_serving or self.retire_old_cas


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _State:
    bundle: tuple[x509.Certificate, ...]
    signer: x509.Certificate | None
    signer_problem: str | None
    serving: x509.Certificate | None
    serving_problems: tuple[str, ...]
    trust_updated_at: datetime | None
    serving_updated_at: datetime | None


def _signer(data: Mapping[str, bytes], now: datetime) -> tuple[x509.Certificate | None, str | None]:
    """The CA in ``ca.crt`` that owns ``ca.key``, if it can sign now; else why not."""
    bundle, ca_problems = parse_certificates(data.get(CA_CRT, b""), f"Secret key {CA_CRT}")
    key, key_problems = parse_private_key(data.get(CA_KEY, b""), f"Secret key {CA_KEY}")
    if ca_problems or key_problems or key is None:
        return None, str((ca_problems + key_problems)[0])
    cert = next((c for c in bundle if key_matches(c, key)), None)
    if cert is None:
        return None, f"Secret key {CA_KEY}: KeyMismatch: no CA in {CA_CRT} belongs to this key"
    if not _is_live_ca(cert, now) or now < cert.not_valid_before_utc:
        return None, (
            f"Secret key {CA_CRT}: the signing CA is not usable now (valid "
            f"{format_time(cert.not_valid_before_utc)} to {format_time(cert.not_valid_after_utc)})"
        )
    return cert, None


def _parse(content: SecretContent, now: datetime, settings: RotationSettings) -> _State:
    ca_pem = content.data.get(CA_CRT, b"")
    bundle, _ = parse_certificates(ca_pem, f"Secret key {CA_CRT}")
    signer, signer_problem = _signer(content.data, now)
    serving_problems = [
        p
        for p in check_pair(
            content.data.get(TLS_CRT, b""),
            content.data.get(TLS_KEY, b""),
            now=now,
            ca_pem=ca_pem if bundle else None,
            dns_names=settings.dns_names,
            ip_addresses=settings.ip_addresses,
            cert_file=f"Secret key {TLS_CRT}",
            key_file=f"Secret key {TLS_KEY}",
            ca_file=f"Secret key {CA_CRT}",
        )
        if p.severity == "error"
    ]
    if not bundle:
        serving_problems.append(
            Problem(f"Secret key {CA_CRT}", "NoCA", "no usable CA to check the serving certificate against")
        )
    serving = None
    if not serving_problems:
        serving = parse_certificates(content.data[TLS_CRT], TLS_CRT)[0][0]
    return _State(
        bundle=tuple(bundle),
        signer=signer,
        signer_problem=signer_problem,
        serving=serving,
        serving_problems=tuple(str(p) for p in serving_problems),
        trust_updated_at=parse_time(content.annotations.get(ANNOTATION_TRUST_UPDATED)),
        serving_updated_at=parse_time(content.annotations.get(ANNOTATION_SERVING_UPDATED)),
    )


def _bundle_contains(bundle_pem: bytes, cert: x509.Certificate) -> bool:
    certs, problems = parse_certificates(bundle_pem, "caBundle")
    want = fingerprint(cert)
    return not problems and any(fingerprint(c) == want for c in certs)


def plan_rotation(
    current: SecretContent | None,
    now: datetime,
    settings: RotationSettings,
    *,
    webhook_bundles: Sequence[bytes] | None = None,
) -> RotationPlan:
    """Decide what the Secret needs now.

    ``webhook_bundles``: the caBundle of every webhook in our webhook
    configuration as currently stored, or None if there is no configuration to
    keep trusting us (then nothing is waited for).
    """
    if current is None:
        return RotationPlan(new_ca=True, new_serving=True, reasons=("the Secret does not exist yet",))
    st = _parse(current, now, settings)
    reasons: list[str] = []
    checks: list[datetime] = []

    new_ca = False
    if st.signer is None:
        new_ca = True
        reasons.append(f"signing CA unusable: {st.signer_problem}")
    else:
        ca_renew_at = renewal_time(st.signer, settings.renew_fraction)
        if now >= ca_renew_at:
            new_ca = True
            reasons.append(
                f"the CA expires at {format_time(st.signer.not_valid_after_utc)}: starting CA rotation"
            )
        else:
            checks.append(ca_renew_at)

    new_serving = False
    signed_by_signer = False
    if st.serving is None:
        new_serving = True
        reasons += [f"serving certificate unusable: {p}" for p in st.serving_problems]
    else:
        signed_by_signer = st.signer is not None and not new_ca and issued_by(st.serving, st.signer)
        renew_at = renewal_time(st.serving, settings.renew_fraction)
        due = now >= renew_at
        if not due:
            checks.append(renew_at)
        if due or not signed_by_signer:
            why = "the serving certificate is due for renewal" if due else "switching to the new CA"
            if new_ca and due and st.signer is not None:
                # The outgoing CA is still valid and trusted everywhere: renew with it now rather
                # than let the certificate run down while the new CA propagates.
                new_serving = True
                reasons.append(f"{why}: renewed by the outgoing CA")
            elif new_ca:
                if due:
                    reasons.append(f"{why}: waits until the new CA has reached the webhook configuration")
                checks.append(now + settings.propagation)
            else:
                assert st.signer is not None
                trusted_since = st.trust_updated_at or st.signer.not_valid_before_utc
                ready_at = trusted_since + settings.propagation
                in_webhook = webhook_bundles is None or all(
                    _bundle_contains(b, st.signer) for b in webhook_bundles
                )
                if now >= ready_at and in_webhook:
                    new_serving = True
                    reasons.append(why)
                elif now < ready_at:
                    reasons.append(f"{why}: waits until {format_time(ready_at)} for the CA to propagate")
                    checks.append(ready_at)
                else:
                    reasons.append(f"{why}: waits until the webhook configuration's caBundle holds the CA")

    retire = False
    if st.signer is not None and not new_ca and not new_serving and signed_by_signer:
        others = [c for c in st.bundle if fingerprint(c) != fingerprint(st.signer)]
        if others:
            assert st.serving is not None
            since = st.serving_updated_at or st.serving.not_valid_before_utc
            retire_at = since + settings.overlap
            if now >= retire_at:
                retire = True
                reasons.append(f"retiring {len(others)} old CA(s): every replica serves the new certificate")
            else:
                checks.append(retire_at)

    return RotationPlan(
        new_ca=new_ca,
        new_serving=new_serving,
        retire_old_cas=retire,
        reasons=tuple(reasons),
        next_check=min(checks) if checks else None,
    )


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def apply_plan(
    current: SecretContent | None, plan: RotationPlan, now: datetime, settings: RotationSettings
) -> SecretContent:
    """Carry out ``plan``: generate what it asks for and return the new Secret content."""
    data = dict(current.data) if current else {}
    annotations = dict(current.annotations) if current else {}
    annotations[ANNOTATION_MANAGED_BY] = MANAGED_BY
    bundle, _ = parse_certificates(data.get(CA_CRT, b""), CA_CRT) if CA_CRT in data else ([], [])

    current_cert, _ = _signer(data, now)
    signer = pki.KeyPair(_pem([current_cert]), data[CA_KEY]) if current_cert is not None else None
    if signer is None and not plan.new_ca:
        raise ValueError("plan requires a usable signing CA; plan_rotation would have asked for a new one")

    def issue_serving(ca: pki.KeyPair) -> None:
        leaf = pki.new_serving_cert(
            ca,
            settings.dns_names,
            ip_addresses=settings.ip_addresses,
            valid_for=settings.serving_validity,
            now=now,
        )
        data[TLS_CRT], data[TLS_KEY] = leaf.cert_pem, leaf.key_pem
        annotations[ANNOTATION_SERVING_UPDATED] = format_time(now)

    # A serving certificate is issued by the current CA when it can still sign: that CA is
    # already trusted by every caBundle, a new one is not yet.
    if plan.new_serving and signer is not None:
        issue_serving(signer)
    if plan.new_ca:
        signer = pki.new_ca(settings.ca_common_name, valid_for=settings.ca_validity, now=now)
        # Keep every CA that may still have signed a certificate some replica serves.
        bundle = [signer.certificate, *(c for c in bundle if _is_live_ca(c, now))]
        annotations[ANNOTATION_TRUST_UPDATED] = format_time(now)
        if plan.new_serving and current_cert is None:
            issue_serving(signer)
    else:
        assert current_cert is not None
        # Signer first: readers (and humans) find the current CA at the top.
        bundle = [current_cert, *(c for c in bundle if fingerprint(c) != fingerprint(current_cert))]
    assert signer is not None

    if plan.retire_old_cas:
        bundle = bundle[:1]

    data[CA_CRT] = _pem(bundle)
    data[CA_KEY] = signer.key_pem
    return SecretContent(data=data, annotations=annotations)


def _is_live_ca(cert: x509.Certificate, now: datetime) -> bool:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return is_ca and cert.not_valid_after_utc > now
