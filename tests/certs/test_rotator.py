from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from certs.check import check_pair, parse_certificates, renewal_time
from certs.files import read_cert_files
from certs.rotation import ANNOTATION_MANAGED_BY, CA_CRT, TLS_CRT, TLS_KEY, SecretContent
from certs.rotator import (
    CAINJECTOR_ANNOTATION,
    Rotator,
    RotatorSettings,
    WebhookConfig,
    run_rotator,
)
from shared.kube import ApiError

from .conftest import NOW
from .fake_kube import FakeKube

pytestmark = pytest.mark.anyio

NS, SECRET, VWC = "agentgroup-system", "agentgroup-webhook-certs", "agentgroup-webhook"
FILES = (TLS_CRT, TLS_KEY, CA_CRT)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings(out: Path, **overrides: object) -> RotatorSettings:
    base = RotatorSettings(
        secret_name=SECRET,
        secret_namespace=NS,
        service_name="agentgroup-webhook",
        service_namespace=NS,
        out_dir=out,
        webhook_config_name=VWC,
        ip_addresses=("127.0.0.1",),
        ca_validity=timedelta(hours=30),
        serving_validity=timedelta(hours=3),
        propagation=timedelta(minutes=1),
        overlap=timedelta(minutes=10),
        interval=timedelta(minutes=1),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def fake_with_config(*hooks: str) -> FakeKube:
    kube = FakeKube()
    kube.set_config(VWC, WebhookConfig({}, tuple((h, b"") for h in hooks or ("agentgroups.example.io",))))
    return kube


def secret(kube: FakeKube) -> SecretContent:
    return kube.secrets[(NS, SECRET)].content


def bundles(kube: FakeKube) -> list[bytes]:
    return [b for _, b in kube.configs[VWC].webhooks]


def trusts(bundle_pem: bytes, cert_pem: bytes, now: datetime) -> bool:
    cas = parse_certificates(bundle_pem, "bundle")[0]
    leaf = x509.load_pem_x509_certificate(cert_pem)
    verifier = (
        PolicyBuilder().store(Store(cas)).time(now).build_server_verifier(x509.DNSName("agentgroup-webhook"))
    )
    try:
        verifier.verify(leaf, [])
    except Exception:
        return False
    return True


async def test_first_start_creates_secret_writes_files_and_injects(tmp_path: Path) -> None:
    kube = fake_with_config("a.example.io", "b.example.io")
    result = await Rotator(kube, settings(tmp_path), clock=Clock()).sync_once()
    assert (result.secret_written, result.files_written, result.injected) == (True, True, True)
    content = secret(kube)
    assert content.annotations[ANNOTATION_MANAGED_BY] == "agentgroup-rotator"
    assert read_cert_files(tmp_path, FILES) == {name: content.data[name] for name in FILES}
    assert bundles(kube) == [content.data[CA_CRT]] * 2
    d = content.data
    names = RotatorSettings.dns_names.fget(settings(tmp_path))  # type: ignore[attr-defined]
    assert (
        check_pair(
            d[TLS_CRT], d[TLS_KEY], now=NOW, ca_pem=d[CA_CRT], dns_names=names, ip_addresses=["127.0.0.1"]
        )
        == []
    )


async def test_steady_state_writes_nothing(tmp_path: Path) -> None:
    kube = fake_with_config()
    rotator = Rotator(kube, settings(tmp_path), clock=Clock())
    await rotator.sync_once()
    writes = list(kube.writes)
    result = await rotator.sync_once()
    assert (result.secret_written, result.files_written, result.injected) == (False, False, False)
    assert kube.writes == writes


async def test_two_rotators_starting_together_agree_on_one_ca(tmp_path: Path) -> None:
    kube = fake_with_config()
    kube.hold_reads = 2  # both read "no Secret" before either creates it
    a = Rotator(kube, settings(tmp_path / "a"), clock=Clock())
    b = Rotator(kube, settings(tmp_path / "b"), clock=Clock())
    ra, rb = await asyncio.gather(a.sync_once(), b.sync_once())
    assert sorted([ra.secret_written, rb.secret_written]) == [False, True]
    assert kube.conflicts == 1
    assert [w for w in kube.writes if w.startswith("create")] == [f"create {NS}/{SECRET}"]
    content = secret(kube)
    for out in ("a", "b"):
        assert read_cert_files(tmp_path / out, FILES) == {name: content.data[name] for name in FILES}
    assert bundles(kube) == [content.data[CA_CRT]]
    assert len(parse_certificates(content.data[CA_CRT], CA_CRT)[0]) == 1


async def test_concurrent_renewals_write_once_and_both_adopt_it(tmp_path: Path) -> None:
    kube = fake_with_config()
    clock = Clock()
    await Rotator(kube, settings(tmp_path / "a"), clock=clock).sync_once()
    leaf = x509.load_pem_x509_certificate(secret(kube).data[TLS_CRT])
    clock.now = renewal_time(leaf, 1 / 3)
    kube.hold_reads = 2
    a = Rotator(kube, settings(tmp_path / "a"), clock=clock)
    b = Rotator(kube, settings(tmp_path / "b"), clock=clock)
    writes_before = len(kube.writes)
    await asyncio.gather(a.sync_once(), b.sync_once())
    assert kube.writes[writes_before:] == [f"replace {NS}/{SECRET}"]
    assert kube.conflicts == 1
    renewed = secret(kube).data[TLS_CRT]
    assert x509.load_pem_x509_certificate(renewed).serial_number != leaf.serial_number
    assert (
        read_cert_files(tmp_path / "a", [TLS_CRT])
        == read_cert_files(tmp_path / "b", [TLS_CRT])
        == {TLS_CRT: renewed}
    )


async def test_overwritten_ca_bundle_is_restored(tmp_path: Path) -> None:
    kube = fake_with_config("a.example.io", "b.example.io")
    rotator = Rotator(kube, settings(tmp_path), clock=Clock())
    await rotator.sync_once()
    good = secret(kube).data[CA_CRT]
    # a Helm upgrade puts back the chart's placeholder
    kube.set_config(VWC, WebhookConfig({}, (("a.example.io", b"placeholder"), ("b.example.io", good))))
    result = await rotator.sync_once()
    assert result.injected
    assert not result.secret_written
    assert bundles(kube) == [good, good]


async def test_foreign_secret_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kube = fake_with_config()
    kube.put_secret(NS, SECRET, SecretContent({"tls.crt": b"user's"}, {}))
    rotator = Rotator(kube, settings(tmp_path / "out"), clock=Clock())
    with caplog.at_level(logging.ERROR, logger="agentgroup.certs"):
        result = await rotator.sync_once()
        await rotator.sync_once()
    assert result.skipped == "the Secret is not managed by the rotator"
    assert kube.writes == []
    assert secret(kube).data == {"tls.crt": b"user's"}
    assert not (tmp_path / "out").exists()
    assert bundles(kube) == [b""]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1  # said once, not every pass
    assert "'secret' certificate mode" in errors[0]


async def test_configuration_owned_by_cainjector_is_not_touched(tmp_path: Path) -> None:
    kube = FakeKube()
    kube.set_config(VWC, WebhookConfig({CAINJECTOR_ANNOTATION: "ns/cert"}, (("a.example.io", b"cm"),)))
    result = await Rotator(kube, settings(tmp_path), clock=Clock()).sync_once()
    assert result.secret_written
    assert not result.injected
    assert bundles(kube) == [b"cm"]


async def test_missing_configuration_still_provides_certificates(tmp_path: Path) -> None:
    kube = FakeKube()
    result = await Rotator(kube, settings(tmp_path), clock=Clock()).sync_once()
    assert (result.secret_written, result.files_written, result.injected) == (True, True, False)


async def test_ca_rotation_through_the_shell_never_breaks_trust(tmp_path: Path) -> None:
    """Two replicas wake at the plan's next_check; after each pass the caBundle trusts both replicas."""
    kube = fake_with_config()
    clock = Clock()
    s = settings(tmp_path / "a")
    replicas = [Rotator(kube, s, clock=clock), Rotator(kube, replace(s, out_dir=tmp_path / "b"), clock=clock)]
    cas: set[int] = set()
    while clock.now < NOW + timedelta(hours=45):
        for r in replicas:
            await r.sync_once()
            for out in ("a", "b"):
                if (tmp_path / out).exists():
                    served = read_cert_files(tmp_path / out, [TLS_CRT])[TLS_CRT]
                    assert trusts(bundles(kube)[0], served, clock.now), (
                        f"untrusted certificate at {clock.now}"
                    )
        cas.add(parse_certificates(secret(kube).data[CA_CRT], CA_CRT)[0][0].serial_number)
        next_checks = [r.next_check for r in replicas if r.next_check is not None]
        clock.now = min([*next_checks, clock.now + timedelta(hours=2)])
    assert len(cas) == 3  # two CA rotations happened


async def test_run_restores_overwritten_bundle_on_watch_event_and_stops(tmp_path: Path) -> None:
    kube = fake_with_config()
    stop, ready = asyncio.Event(), asyncio.Event()
    rotator = Rotator(
        kube, settings(tmp_path, interval=timedelta(hours=1), overlap=timedelta(hours=2)), clock=Clock()
    )
    task = asyncio.create_task(rotator.run(stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    good = secret(kube).data[CA_CRT]
    assert bundles(kube) == [good]
    kube.patched.clear()
    kube.set_config(VWC, WebhookConfig({}, (("agentgroups.example.io", b""),)))  # notifies the watch
    await asyncio.wait_for(kube.patched.wait(), 10)
    assert bundles(kube) == [good]
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_run_survives_api_errors(tmp_path: Path) -> None:
    kube = fake_with_config()
    kube.read_errors = [
        ApiError(503, "ServiceUnavailable", "unavailable"),
        ApiError(403, "Forbidden", "forbidden"),
        ApiError(0, "ConnectionError", "connection refused"),
    ]
    stop, ready = asyncio.Event(), asyncio.Event()
    rotator = Rotator(kube, settings(tmp_path), clock=Clock(), retry_backoff=timedelta(milliseconds=1))
    task = asyncio.create_task(rotator.run(stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    assert kube.read_errors == []
    assert (NS, SECRET) in kube.secrets
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("mode", ["cert-manager", "secret"])
async def test_other_modes_stay_out_of_the_way(tmp_path: Path, mode: str) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    await asyncio.wait_for(run_rotator(settings(tmp_path, mode=mode), stop, ready=ready), 5)
    assert ready.is_set()
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


def test_settings_dns_names_and_validation(tmp_path: Path) -> None:
    s = settings(tmp_path, extra_dns_names=("localhost", "agentgroup-webhook"))
    assert s.dns_names == (
        "agentgroup-webhook",
        f"agentgroup-webhook.{NS}",
        f"agentgroup-webhook.{NS}.svc",
        f"agentgroup-webhook.{NS}.svc.cluster.local",
        "localhost",
    )
    with pytest.raises(ValueError, match="unknown certificate mode"):
        settings(tmp_path, mode="vault")
    with pytest.raises(ValueError, match="twice the interval"):
        settings(tmp_path, overlap=timedelta(seconds=90))
    with pytest.raises(ValueError, match="serving renewal window"):
        settings(tmp_path, serving_validity=timedelta(minutes=2))
    # outside self-managed mode the rotation settings do not matter
    assert settings(tmp_path, mode="secret", overlap=timedelta(0)).mode == "secret"
