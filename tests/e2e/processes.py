"""Our processes in end-to-end tests: `agentgroup webhook`, `agentgroup controller` and the Sandbox
simulator, each started on loopback ports with its log in a file and stopped by its PID."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from agentgroup.devcluster import REPO_ROOT, LocalControlPlane, free_port, open_local
from certs import pki
from certs.files import write_cert_files
from tests.e2e.kube import kubectl, wait_for
from tests.webhook.fakes import group
from webhook.app import VALIDATE_PATH

WEBHOOK_NAME = "validate.agentgroups.runtime.agentcube.volcano.sh"


@dataclass
class Process:
    """A process of ours, stopped by its PID; its ops endpoints are on loopback ports."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0
    health_port: int = 0

    @classmethod
    def spawn(cls, name: str, args: list[str], log: Path, **ports: int) -> Process:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT
            )
        return cls(name, proc, log, **ports)

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def get(self, port: int, path: str) -> tuple[int, str]:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with status {self.proc.returncode}\n{self.log_tail()}")
        try:
            with open_local(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except (urllib.error.URLError, OSError) as err:
            return 0, str(err)

    def readyz(self) -> tuple[int, str]:
        return self.get(self.health_port, "/readyz")

    def metrics(self) -> str:
        return self.get(self.metrics_port, "/metrics")[1]

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled-or-single-series metric, None when not exported (yet)."""
        match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", self.metrics(), re.MULTILINE)
        return float(match.group(1)) if match else None

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
        wait(predicate, what, self, timeout=timeout)

    def wait_ready(self) -> None:
        self.wait(lambda: self.readyz()[0] == 200, f"{self.name} to be ready")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig``, then the exit status (a process that does not stop is killed and fails the test)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop on {sig.name}\n{self.log_tail()}") from None


def wait(predicate: Callable[[], object], what: str, *procs: Process, timeout: float = 60) -> None:
    """``wait_for`` that shows the processes' logs when it times out."""
    try:
        wait_for(predicate, timeout, what)
    except AssertionError as exc:
        logs = "".join(f"\n--- {p.name} log\n{p.log_tail()}" for p in procs)
        raise AssertionError(f"{exc}{logs}") from None


@dataclass
class Webhook(Process):
    """An `agentgroup webhook` process serving HTTPS on ``port``."""

    port: int = 0

    @classmethod
    def start(cls, cluster: LocalControlPlane, cert_dir: Path, log: Path, *flags: str) -> Webhook:
        port, metrics_port, health_port = free_port(), free_port(), free_port()
        args = [
            *(sys.executable, "-m", "agentgroup", "webhook", "--kubeconfig", str(cluster.kubeconfig)),
            *("--webhook-bind-address", f"127.0.0.1:{port}", "--cert-dir", str(cert_dir)),
            *("--metrics-bind-address", f"127.0.0.1:{metrics_port}"),
            *("--health-probe-bind-address", f"127.0.0.1:{health_port}", "--log-format", "text"),
            *flags,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT
            )
        return cls("agentgroup webhook", proc, log, metrics_port, health_port, port)


def serving_files(cert_dir: Path, ca: pki.KeyPair) -> None:
    """A serving certificate for 127.0.0.1 signed by ``ca``, where the webhook reads it."""
    serving = pki.new_serving_cert(ca, ["localhost"], ip_addresses=["127.0.0.1"], valid_for=timedelta(days=1))
    write_cert_files(cert_dir, {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem})


def webhook_configuration(port: int, ca: pki.KeyPair | None, name: str) -> dict[str, Any]:
    """The registration by URL; without ``ca`` the caBundle is left for the rotator to fill in."""
    client_config = {"url": f"https://127.0.0.1:{port}{VALIDATE_PATH}"}
    if ca is not None:
        client_config["caBundle"] = base64.b64encode(ca.cert_pem).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client_config,
                "rules": [
                    {
                        "apiGroups": ["runtime.agentcube.volcano.sh"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["agentgroups"],
                    }
                ],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


def judged_by_webhook() -> bool:
    """A server-side dry run of a group only the webhook refuses is refused: the registration is live."""
    probe = group(("a", "AgentRuntime", "x"), deps=[("a", "ghost")], name="probe", namespace="default")
    r = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(probe))
    return not r.ok and "UnknownAgent" in r.stderr
