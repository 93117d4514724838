"""The self-managed certificate rotator against the real API server.

Each "replica" runs in its own thread with its own event loop, as a webhook process would: the
rotator (certs.rotator) and, where the test needs admissions, the webhook's TLS server with its
certificate reloader reading the rotator's files. kubectl runs in the test's thread, so a slow
request never stalls a server. The ValidatingWebhookConfigurations made here only match the test's
namespace, and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentgroup.devcluster import LocalControlPlane
from certs.check import parse_certificates
from certs.files import read_cert_files
from certs.rotation import CA_CRT, TLS_CRT, SecretContent
from certs.rotator import KubeCertsAPI, Rotator, RotatorSettings, SecretObject
from shared.kube import Kube, api_client
from tests.e2e.kube import get_json, kubectl, wait_for

SERVICE = "agentgroup-webhook"
SECRET = "agentgroup-webhook-certs"


def webhook_configuration(name: str, namespace: str, url: str) -> dict[str, Any]:
    """Our webhook registration, limited to ``namespace``; no caBundle, as the chart ships it."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "agentgroups.runtime.agentcube.volcano.sh",
                "clientConfig": {"url": url},
                "rules": [
                    {
                        "apiGroups": ["runtime.agentcube.volcano.sh"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["agentgroups"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
        ],
    }


@pytest.fixture
def vwc_name(namespace: str) -> Iterator[str]:
    name = f"agentgroup-certs-{namespace}"
    yield name
    kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=True)


def apply_json(obj: dict[str, Any], *verb: str) -> None:
    kubectl(*(verb or ("apply",)), "-f", "-", input=json.dumps(obj), check=True)


def injected_bundles(name: str) -> list[bytes]:
    vwc = get_json("validatingwebhookconfiguration", name)
    assert vwc is not None
    return [base64.b64decode(w["clientConfig"].get("caBundle") or "") for w in vwc["webhooks"]]


def secret_data(namespace: str) -> dict[str, bytes] | None:
    obj = get_json("secret", SECRET, namespace)
    if obj is None:
        return None
    return {k: base64.b64decode(v) for k, v in obj["data"].items()}


class Recording(KubeCertsAPI):
    """KubeCertsAPI that remembers what it wrote (and, optionally, holds the first read at a barrier)."""

    def __init__(self, kube: Kube, barrier: threading.Barrier | None = None) -> None:
        super().__init__(kube)
        self.barrier = barrier
        self.written: list[SecretContent] = []
        self.written_at: list[float] = []  # time.monotonic() of each write
        self.conflicts = 0

    async def read_secret(self, namespace: str, name: str) -> SecretObject | None:
        obj = await super().read_secret(namespace, name)
        if self.barrier is not None:
            barrier, self.barrier = self.barrier, None
            await asyncio.to_thread(barrier.wait, 30)  # every replica has read before any writes
        return obj

    async def create_secret(self, namespace: str, name: str, content: SecretContent) -> SecretObject:
        try:
            obj = await super().create_secret(namespace, name, content)
        except Exception:
            self.conflicts += 1
            raise
        self.written.append(content)
        self.written_at.append(time.monotonic())
        return obj

    async def replace_secret(self, current: SecretObject, content: SecretContent) -> SecretObject:
        try:
            obj = await super().replace_secret(current, content)
        except Exception:
            self.conflicts += 1
            raise
        self.written.append(content)
        self.written_at.append(time.monotonic())
        return obj


class Replica:
    """One webhook replica in a thread: the rotator, and with ``serve`` the TLS server and reloader."""

    def __init__(
        self,
        cluster: LocalControlPlane,
        settings: RotatorSettings,
        *,
        serve: bool = False,
        reload_interval: float = 1.0,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.serve = serve
        self.reload_interval = reload_interval
        self.barrier = barrier
        self.api: Recording | None = None
        self.url = ""
        self.checks: dict[str, Callable[[], bool]] = {}
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"replica-{settings.out_dir.name}", daemon=True
        )

    def start(self) -> Replica:
        self._thread.start()
        return self

    def ready(self) -> bool:
        if self.error is not None:
            raise AssertionError(f"replica {self.settings.out_dir.name} failed: {self.error!r}")
        return bool(self.checks) and all(check() for check in self.checks.values())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "replica did not stop"

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as e:
            self.error = e

    async def _run(self) -> None:
        from webhook.app import VALIDATE_PATH, create_app
        from webhook.cluster import KubeCluster
        from webhook.server import WebhookServer
        from webhook.tls import CertReloader

        self._loop = asyncio.get_running_loop()
        self._stop = stop = asyncio.Event()
        # One client for the rotator and the webhook's caches, as in the webhook process.
        kube = Kube(await api_client(str(self.cluster.kubeconfig)))
        self.api = Recording(kube, self.barrier)
        rotator = Rotator(self.api, self.settings)
        rotated = asyncio.Event()
        self.checks["rotator"] = rotated.is_set
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(rotator.run(stop, ready=rotated))
                if self.serve:
                    cluster = KubeCluster(kube)
                    reloader = CertReloader(self.settings.out_dir, interval=self.reload_interval)
                    server = WebhookServer(create_app(cluster), reloader.context, "127.0.0.1:0")
                    self.url = f"https://127.0.0.1:{server.port}{VALIDATE_PATH}"
                    self.checks |= {
                        "synced": lambda: cluster.synced,
                        "loaded": lambda: reloader.loaded,
                        "listening": lambda: server.listening,
                    }
                    tasks.create_task(cluster.run(stop))
                    tasks.create_task(reloader.run(stop))
                    tasks.create_task(server.serve(stop))
                await stop.wait()
        finally:
            await kube.close()


def settings(namespace: str, out: Path, vwc: str, **overrides: Any) -> RotatorSettings:
    base = RotatorSettings(
        secret_name=SECRET,
        secret_namespace=namespace,
        service_name=SERVICE,
        service_namespace=namespace,
        out_dir=out,
        webhook_config_name=vwc,
        ip_addresses=("127.0.0.1",),
        interval=timedelta(seconds=5),
    )
    return replace(base, **overrides)


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        r.stop()


def test_two_rotators_starting_at_once_agree_on_one_ca(
    cluster: LocalControlPlane, namespace: str, vwc_name: str, tmp_path: Path, replicas: list[Replica]
) -> None:
    apply_json(webhook_configuration(vwc_name, namespace, "https://127.0.0.1:1/unused"))
    barrier = threading.Barrier(2)
    for name in ("a", "b"):
        s = settings(namespace, tmp_path / name, vwc_name)
        replicas.append(Replica(cluster, s, barrier=barrier).start())
    wait_for(lambda: all(r.ready() for r in replicas), 60, "both rotators to provide certificates")

    # Both read "no Secret" before either wrote: one create won, the other got 409 and adopted it.
    assert sum(len(r.api.written) for r in replicas if r.api) == 1
    assert sum(r.api.conflicts for r in replicas if r.api) == 1
    data = secret_data(namespace)
    assert data is not None
    assert len(parse_certificates(data[CA_CRT], CA_CRT)[0]) == 1
    for name in ("a", "b"):
        files = read_cert_files(tmp_path / name, ("tls.crt", "tls.key", "ca.crt"))
        assert files == {k: data[k] for k in ("tls.crt", "tls.key", "ca.crt")}
    assert injected_bundles(vwc_name) == [data[CA_CRT]]
    r = kubectl("get", "secret", SECRET, "-n", namespace, "-o", "jsonpath={.type}")
    assert r.stdout == "kubernetes.io/tls"


def test_overwritten_ca_bundle_is_restored(
    cluster: LocalControlPlane, namespace: str, vwc_name: str, tmp_path: Path, replicas: list[Replica]
) -> None:
    original = webhook_configuration(vwc_name, namespace, "https://127.0.0.1:1/unused")
    apply_json(original)
    replicas.append(Replica(cluster, settings(namespace, tmp_path / "a", vwc_name)).start())
    wait_for(replicas[0].ready, 60, "the rotator to provide certificates")
    data = secret_data(namespace)
    assert data is not None
    wait_for(lambda: injected_bundles(vwc_name) == [data[CA_CRT]], 30, "the caBundle to be injected")

    # A Helm upgrade puts the chart's own object back: no caBundle at all.
    replaced = overwrite(["replace", "-f", "-"], json.dumps(original))
    assert "caBundle" not in replaced["webhooks"][0]["clientConfig"]
    wait_for(lambda: restored(vwc_name, replaced, data[CA_CRT]), 30, "the caBundle to be restored")

    # Someone writes a wrong bundle.
    bogus = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nbogus\n-----END CERTIFICATE-----\n").decode()
    patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bogus}]
    patched = overwrite(
        ["patch", "validatingwebhookconfiguration", vwc_name, "--type=json", "-p", json.dumps(patch)]
    )
    assert patched["webhooks"][0]["clientConfig"]["caBundle"] == bogus
    wait_for(lambda: restored(vwc_name, patched, data[CA_CRT]), 30, "the caBundle to be restored")


def overwrite(args: list[str], input: str | None = None) -> dict[str, Any]:
    """Change the configuration with kubectl; the object as this write left it."""
    r = kubectl(*args, "-o", "json", input=input, check=True)
    obj: dict[str, Any] = json.loads(r.stdout)
    return obj


def restored(name: str, after: dict[str, Any], bundle: bytes) -> bool:
    """A later write than ``after`` has put ``bundle`` back into every webhook."""
    vwc = get_json("validatingwebhookconfiguration", name)
    assert vwc is not None
    later = vwc["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"]
    return later and injected_bundles(name) == [bundle]


def agent_group(edges: list[tuple[str, str]], **metadata: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
            "kind": "AgentGroup",
            "metadata": {"name": "rotation", **metadata},
            "spec": {
                "agents": [
                    {"name": "a", "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}},
                    {"name": "b", "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}},
                ],
                "dependencies": [{"from": f, "to": t} for f, t in edges],
            },
        }
    )


CYCLIC = agent_group([("a", "b"), ("b", "a")])


def webhook_denied_cycle(code: int, stderr: str) -> bool:
    """Only the webhook finds cycles (the CRD's CEL rules cannot), so this answer is the webhook's."""
    return code != 0 and "DependencyCycle: the dependencies contain the cycle a -> b -> a" in stderr


def _ca_serials(content: SecretContent) -> list[int]:
    return [c.serial_number for c in parse_certificates(content.data[CA_CRT], CA_CRT)[0]]


def _serving_serial(content: SecretContent) -> int:
    return parse_certificates(content.data[TLS_CRT], TLS_CRT)[0][0].serial_number


def ca_retired_at(api: Recording) -> list[float]:
    """When the Secret went from two CAs (the overlap) back to one, the newer."""
    sizes = [len(_ca_serials(content)) for content in api.written]
    return [api.written_at[i + 1] for i, pair in enumerate(itertools.pairwise(sizes)) if pair == (2, 1)]


def test_forced_rotation_under_load_fails_no_admission(
    cluster: LocalControlPlane, namespace: str, vwc_name: str, tmp_path: Path, replicas: list[Replica]
) -> None:
    """Seconds-long certificates: the serving certificate renews every ~11 s and the CA rotates while
    kubectl keeps asking the webhook; every request gets the webhook's own answer.

    The replica's reloader polls every 3 s (1 s by default), so the files lag the Secret: a rotation
    that switched or retired a CA too early would fail admissions here.
    """
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
                "kind": "CodeInterpreter",
                "metadata": {"name": "py"},
                "spec": {"template": {"image": "python:3.12"}},
            }
        ),
        check=True,
    )
    fast = settings(
        namespace,
        tmp_path / "a",
        vwc_name,
        ca_validity=timedelta(seconds=36),
        serving_validity=timedelta(seconds=15),
        propagation=timedelta(seconds=2),
        overlap=timedelta(seconds=8),
        interval=timedelta(seconds=1),
    )
    replica = Replica(cluster, fast, serve=True, reload_interval=3.0).start()
    replicas.append(replica)
    wait_for(replica.ready, 60, "the webhook replica to be ready")
    apply_json(webhook_configuration(vwc_name, namespace, replica.url))

    def denied_by_webhook() -> bool:
        r = kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=CYCLIC)
        return webhook_denied_cycle(r.code, r.stderr)

    wait_for(denied_by_webhook, 30, "the webhook to answer admissions")

    api = replica.api
    assert api is not None
    failures: list[str] = []
    answered = 0
    deadline = datetime.now(UTC) + timedelta(seconds=120)

    def done() -> bool:
        # A full CA rotation, several serving certificates, and load kept up for longer than the
        # replica's reload lag after the old CA left the caBundle.
        retired = ca_retired_at(api)
        renewed = len({_serving_serial(c) for c in api.written}) >= 4
        return bool(retired) and renewed and time.monotonic() - retired[0] > 2 * replica.reload_interval + 1

    while not done():
        assert datetime.now(UTC) < deadline, f"no complete CA rotation in time; failures so far: {failures}"
        answered += 1
        if answered % 3:
            doc = agent_group([("a", "b")], annotations={"iteration": str(answered)})
            r = kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=doc)
            if r.code != 0:
                failures.append(f"{datetime.now(UTC):%H:%M:%S.%f} valid group refused: {r.stderr.strip()}")
        else:
            r = kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=CYCLIC)
            if not webhook_denied_cycle(r.code, r.stderr):
                failures.append(f"{datetime.now(UTC):%H:%M:%S.%f} no webhook verdict: {r.stderr.strip()}")

    assert failures == []
    assert answered >= 10
