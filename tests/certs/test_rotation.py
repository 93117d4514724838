from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import pki
from certs.check import check_pair, parse_certificates, renewal_time
from certs.rotation import (
    ANNOTATION_MANAGED_BY,
    ANNOTATION_SERVING_UPDATED,
    ANNOTATION_TRUST_UPDATED,
    CA_CRT,
    CA_KEY,
    MANAGED_BY,
    TLS_CRT,
    TLS_KEY,
    RotationPlan,
    RotationSettings,
    SecretContent,
    apply_plan,
    format_time,
    parse_time,
    plan_rotation,
)

from .conftest import NAMES, NOW

US = timedelta(microseconds=1)
S = RotationSettings(
    dns_names=NAMES,
    ca_validity=timedelta(hours=30),
    serving_validity=timedelta(hours=3),
    propagation=timedelta(minutes=1),
    overlap=timedelta(minutes=10),
)


def created(now: datetime = NOW, s: RotationSettings = S) -> SecretContent:
    plan = plan_rotation(None, now, s)
    assert (plan.new_ca, plan.new_serving) == (True, True)
    return apply_plan(None, plan, now, s)


def bundle(content: SecretContent) -> list[x509.Certificate]:
    return parse_certificates(content.data[CA_CRT], CA_CRT)[0]


def serving(content: SecretContent) -> x509.Certificate:
    return parse_certificates(content.data[TLS_CRT], TLS_CRT)[0][0]


def signer(content: SecretContent) -> x509.Certificate:
    return bundle(content)[0]


def step(
    content: SecretContent, now: datetime, *, webhook: list[bytes] | None = None, s: RotationSettings = S
) -> tuple[RotationPlan, SecretContent]:
    plan = plan_rotation(content, now, s, webhook_bundles=webhook)
    return plan, (apply_plan(content, plan, now, s) if plan.changes else content)


def kept_fresh(content: SecretContent, until: datetime) -> SecretContent:
    """Renew the serving certificate on schedule until its next renewal lies after ``until``."""
    while (t := renewal_time(serving(content), S.renew_fraction)) <= until:
        plan, content = step(content, t, webhook=[content.data[CA_CRT]])
        assert (plan.new_ca, plan.new_serving) == (False, True)
    return content


def test_missing_secret_creates_ca_and_serving_cert() -> None:
    content = created()
    assert content.annotations[ANNOTATION_MANAGED_BY] == MANAGED_BY
    assert content.managed
    assert parse_time(content.annotations[ANNOTATION_TRUST_UPDATED]) == NOW
    assert parse_time(content.annotations[ANNOTATION_SERVING_UPDATED]) == NOW
    assert len(bundle(content)) == 1
    d = content.data
    assert check_pair(d[TLS_CRT], d[TLS_KEY], now=NOW, ca_pem=d[CA_CRT], dns_names=NAMES) == []
    assert serving(content).not_valid_after_utc == NOW + S.serving_validity
    assert signer(content).not_valid_after_utc == NOW + S.ca_validity


def test_fresh_secret_needs_nothing_and_says_when_to_look_again() -> None:
    content = created()
    plan = plan_rotation(content, NOW, S, webhook_bundles=[content.data[CA_CRT]])
    assert plan == RotationPlan(next_check=renewal_time(serving(content), S.renew_fraction))
    assert not plan.changes


def test_serving_renewal_boundary() -> None:
    content = created()
    renew_at = renewal_time(serving(content), S.renew_fraction)
    # at most a third of the lifetime left (lifetime includes the 5-minute backdate)
    assert serving(content).not_valid_after_utc - renew_at == (S.serving_validity + pki.BACKDATE) / 3
    before = plan_rotation(content, renew_at - US, S)
    assert not before.changes
    assert before.next_check == renew_at
    at = plan_rotation(content, renew_at, S)
    assert (at.new_ca, at.new_serving, at.retire_old_cas) == (False, True, False)
    assert at.reasons == ("the serving certificate is due for renewal",)
    renewed = apply_plan(content, at, renew_at, S)
    assert serving(renewed).serial_number != serving(content).serial_number
    assert renewed.data[CA_CRT] == content.data[CA_CRT]
    assert renewed.data[CA_KEY] == content.data[CA_KEY]
    assert parse_time(renewed.annotations[ANNOTATION_SERVING_UPDATED]) == renew_at
    assert renewed.annotations[ANNOTATION_TRUST_UPDATED] == content.annotations[ANNOTATION_TRUST_UPDATED]


def test_ca_rotation_runs_in_three_steps_at_exact_boundaries() -> None:
    content = created()
    old_ca = signer(content)
    ca_renew_at = renewal_time(old_ca, S.renew_fraction)
    content = kept_fresh(content, ca_renew_at)
    assert not plan_rotation(content, ca_renew_at - US, S).new_ca

    # 1. new CA: signer changes, bundle holds both, serving certificate untouched
    t0 = ca_renew_at
    plan, rotated = step(content, t0)
    assert (plan.new_ca, plan.new_serving, plan.retire_old_cas) == (True, False, False)
    assert [c.subject for c in bundle(rotated)][1] == old_ca.subject
    assert bundle(rotated)[1] == old_ca
    new_ca = signer(rotated)
    assert new_ca != old_ca
    assert rotated.data[TLS_CRT] == content.data[TLS_CRT]
    assert parse_time(rotated.annotations[ANNOTATION_TRUST_UPDATED]) == t0
    both = rotated.data[CA_CRT]

    # 2. switch: not before `propagation`, and not before the webhook configuration holds the new CA
    waiting = plan_rotation(rotated, t0 + S.propagation - US, S, webhook_bundles=[both])
    assert not waiting.changes
    assert waiting.next_check == t0 + S.propagation
    stale_webhook = plan_rotation(
        rotated, t0 + S.propagation, S, webhook_bundles=[both, content.data[CA_CRT]]
    )
    assert not stale_webhook.changes
    assert "caBundle holds the CA" in stale_webhook.reasons[0]
    t1 = t0 + S.propagation
    plan, switched = step(rotated, t1, webhook=[both, both])
    assert (plan.new_ca, plan.new_serving, plan.retire_old_cas) == (False, True, False)
    assert plan.reasons == ("switching to the new CA",)
    serving(switched).verify_directly_issued_by(new_ca)
    assert switched.data[CA_CRT] == both  # old CA still trusted during the overlap

    # 3. retire the old CA once the new serving certificate has been out for `overlap`
    waiting = plan_rotation(switched, t1 + S.overlap - US, S, webhook_bundles=[both])
    assert not waiting.changes
    assert waiting.next_check == t1 + S.overlap
    plan, retired = step(switched, t1 + S.overlap, webhook=[both])
    assert (plan.new_ca, plan.new_serving, plan.retire_old_cas) == (False, False, True)
    assert bundle(retired) == [new_ca]
    assert retired.data[TLS_CRT] == switched.data[TLS_CRT]
    assert not plan_rotation(retired, t1 + S.overlap, S, webhook_bundles=[retired.data[CA_CRT]]).changes


def test_no_webhook_configuration_means_nothing_to_wait_for() -> None:
    content = created()
    t0 = renewal_time(signer(content), S.renew_fraction)
    _, rotated = step(kept_fresh(content, t0), t0)
    plan = plan_rotation(rotated, t0 + S.propagation, S, webhook_bundles=None)
    assert plan.new_serving


def test_renewal_due_during_propagation_waits_for_it() -> None:
    content = created()
    ca_renew_at = renewal_time(signer(content), S.renew_fraction)
    content = kept_fresh(content, ca_renew_at + S.propagation)
    due = renewal_time(serving(content), S.renew_fraction)
    t0 = due - S.propagation / 2  # the CA rotation starts shortly before the serving cert is due
    plan, rotated = step(content, t0)
    assert (plan.new_ca, plan.new_serving) == (True, False)
    plan = plan_rotation(rotated, due, S, webhook_bundles=[rotated.data[CA_CRT]])
    assert not plan.changes
    assert plan.next_check == t0 + S.propagation
    assert "waits until" in plan.reasons[0]
    assert plan_rotation(rotated, t0 + S.propagation, S, webhook_bundles=[rotated.data[CA_CRT]]).new_serving


def test_unusable_serving_cert_does_not_wait_for_propagation() -> None:
    content = created()
    t0 = renewal_time(signer(content), S.renew_fraction)
    _, rotated = step(kept_fresh(content, t0), t0)
    broken = SecretContent({**rotated.data, TLS_CRT: b"junk"}, rotated.annotations)
    assert plan_rotation(broken, t0 + US, S, webhook_bundles=[content.data[CA_CRT]]).new_serving


@pytest.mark.parametrize(
    ("breakage", "new_ca", "new_serving"),
    [
        ({TLS_CRT: b"junk"}, False, True),
        ({TLS_KEY: b""}, False, True),
        ({CA_KEY: b"junk"}, True, False),
        ({CA_CRT: b"junk"}, True, True),
    ],
)
def test_unusable_parts_are_replaced(breakage: dict[str, bytes], new_ca: bool, new_serving: bool) -> None:
    content = created()
    broken = SecretContent({**content.data, **breakage}, content.annotations)
    plan = plan_rotation(broken, NOW, S)
    assert (plan.new_ca, plan.new_serving) == (new_ca, new_serving)
    assert any("unusable" in r for r in plan.reasons)
    fixed = apply_plan(broken, plan, NOW, S)
    assert check_pair(fixed.data[TLS_CRT], fixed.data[TLS_KEY], now=NOW, ca_pem=fixed.data[CA_CRT]) == []


def test_key_mismatch_replaces_serving_cert_at_once() -> None:
    content = created()
    other = created()
    broken = SecretContent({**content.data, TLS_KEY: other.data[TLS_KEY]}, content.annotations)
    plan = plan_rotation(broken, NOW, S)
    assert plan.new_serving
    assert any("KeyMismatch" in r for r in plan.reasons)


def test_ca_key_of_another_ca_starts_a_rotation_keeping_the_old_ca_trusted() -> None:
    content = created()
    other = created()
    broken = SecretContent({**content.data, CA_KEY: other.data[CA_KEY]}, content.annotations)
    plan = plan_rotation(broken, NOW, S)
    assert (plan.new_ca, plan.new_serving) == (True, False)
    assert "KeyMismatch" in plan.reasons[0]
    fixed = apply_plan(broken, plan, NOW, S)
    assert bundle(fixed)[1] == signer(content)


def test_settings_change_of_service_name_reissues_at_once() -> None:
    content = created()
    moved = RotationSettings(dns_names=("new-svc", "new-svc.ns", "new-svc.ns.svc"), ca_validity=S.ca_validity)
    plan = plan_rotation(content, NOW, moved)
    assert (plan.new_ca, plan.new_serving) == (False, True)
    assert "WrongSANs" in plan.reasons[0]


def test_expired_everything_is_replaced() -> None:
    content = created()
    later = NOW + S.ca_validity + timedelta(days=1)
    plan = plan_rotation(content, later, S)
    assert (plan.new_ca, plan.new_serving) == (True, True)
    fixed = apply_plan(content, plan, later, S)
    assert bundle(fixed) == [signer(fixed)]  # the expired CA is not kept
    assert check_pair(fixed.data[TLS_CRT], fixed.data[TLS_KEY], now=later, ca_pem=fixed.data[CA_CRT]) == []


def test_missing_annotations_fall_back_to_certificate_times() -> None:
    content = created()
    bare = SecretContent(content.data, {ANNOTATION_MANAGED_BY: MANAGED_BY})
    t0 = renewal_time(signer(content), S.renew_fraction)
    _, rotated = step(bare, t0)
    # the trust annotation is set by the CA rotation itself
    assert parse_time(rotated.annotations[ANNOTATION_TRUST_UPDATED]) == t0
    t1 = t0 + S.propagation
    _, switched = step(SecretContent(rotated.data, {ANNOTATION_MANAGED_BY: MANAGED_BY}), t1)
    bare_switched = SecretContent(switched.data, {ANNOTATION_MANAGED_BY: MANAGED_BY})
    # without the serving annotation, the serving cert's notBefore (backdated) starts the overlap
    retire_at = serving(switched).not_valid_before_utc + S.overlap
    assert not plan_rotation(bare_switched, retire_at - US, S).retire_old_cas
    assert plan_rotation(bare_switched, retire_at, S).retire_old_cas


def test_apply_keeps_foreign_keys_and_annotations() -> None:
    content = created()
    extra = SecretContent({**content.data, "extra": b"x"}, {**content.annotations, "team": "a"})
    renew_at = renewal_time(serving(content), S.renew_fraction)
    out = apply_plan(extra, plan_rotation(extra, renew_at, S), renew_at, S)
    assert out.data["extra"] == b"x"
    assert out.annotations["team"] == "a"


def test_apply_refuses_a_plan_that_needs_a_missing_signer() -> None:
    content = created()
    broken = SecretContent({**content.data, CA_KEY: b"junk"}, content.annotations)
    with pytest.raises(ValueError, match="signing CA"):
        apply_plan(broken, RotationPlan(new_serving=True), NOW, S)


def test_time_annotations_round_trip_and_reject_garbage() -> None:
    assert parse_time(format_time(NOW + US)) == NOW + US
    assert format_time(NOW) == "2030-06-01T12:00:00Z"
    assert parse_time("yesterday") is None
    assert parse_time(None) is None
    assert parse_time("2030-06-01T12:00:00") == NOW  # naive means UTC


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dns_names": ()}, "at least one DNS name"),
        ({"renew_fraction": 1.0}, "renew_fraction"),
        ({"serving_validity": timedelta(minutes=2)}, "serving renewal window"),
        ({"ca_validity": timedelta(minutes=30)}, "CA renewal window"),
        ({"ca_validity": -timedelta(days=1)}, "positive"),
    ],
)
def test_settings_validation(kwargs: dict[str, Any], message: str) -> None:
    base = {"dns_names": NAMES}
    with pytest.raises(ValueError, match=message):
        RotationSettings(**(base | kwargs))


def _trusted(bundle_pem: bytes, cert: x509.Certificate, now: datetime) -> bool:
    cas = parse_certificates(bundle_pem, "bundle")[0]
    try:
        PolicyBuilder().store(Store(cas)).time(now).build_server_verifier(x509.DNSName(NAMES[2])).verify(
            cert, []
        )
    except Exception:
        return False
    return True


# Shorter lifetimes than S so two CA rotations take few steps: 3h CA, 40m serving.
SIM = RotationSettings(
    dns_names=NAMES,
    ca_validity=timedelta(hours=3),
    serving_validity=timedelta(minutes=40),
    propagation=timedelta(minutes=1),
    overlap=timedelta(minutes=5),
)


@settings(max_examples=15, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=10, max_value=6 * 60), min_size=1, max_size=30),
    precise=st.booleans(),
)
def test_webhook_bundle_always_trusts_every_certificate_a_replica_may_serve(
    steps: list[int], precise: bool
) -> None:
    """The safety property, simulated across two CA rotations.

    The rotator wakes after a random interval, or (``precise``) at the plan's
    next_check plus a random delay, and injects ca.crt right after each write.
    A kube-apiserver may still use any caBundle injected less than
    ``apiserver_lag`` (< propagation) ago, or the last one before that; a
    replica may still serve any certificate replaced less than ``replica_lag``
    (< overlap) ago. Every bundle in use must trust every certificate in use.
    """
    apiserver_lag = SIM.propagation - timedelta(seconds=1)
    replica_lag = SIM.overlap - timedelta(minutes=1)
    now = NOW
    content = created(now, SIM)
    injected: list[tuple[datetime, bytes]] = [(now, content.data[CA_CRT])]
    served: list[tuple[datetime, x509.Certificate]] = [(now, serving(content))]  # (since, cert)
    cas = {signer(content).serial_number}
    next_check: datetime | None = None
    i = 0
    while now < NOW + timedelta(hours=4, minutes=30):
        delay = timedelta(seconds=steps[i % len(steps)])
        i += 1
        if precise and next_check is not None:
            delay = max(
                min(delay, next_check - now + timedelta(seconds=delay.seconds % 7)), timedelta(seconds=1)
            )
        now += delay
        plan, content = step(content, now, webhook=[injected[-1][1]], s=SIM)
        next_check = plan.next_check
        if plan.new_serving:
            served.append((now, serving(content)))
        if content.data[CA_CRT] != injected[-1][1]:
            injected.append((now, content.data[CA_CRT]))
        cas.add(signer(content).serial_number)

        settled = [b for t, b in injected if now - t >= apiserver_lag][-1:]
        bundles_in_use = settled + [b for t, b in injected if now - t < apiserver_lag]
        certs_in_use = [served[-1][1]] + [
            cert for (_, cert), (until, _) in itertools.pairwise(served) if now - until < replica_lag
        ]
        for cert in certs_in_use:
            assert cert.not_valid_after_utc >= now, f"a served certificate expired at {now}"
            for b in bundles_in_use:
                assert _trusted(b, cert, now), (
                    f"a caBundle in use does not trust a served certificate at {now}"
                )
    assert len(cas) == 3  # two CA rotations happened
