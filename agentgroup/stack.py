"""The whole product on one machine: a local control plane, the webhook, the controller and the simulator.

:class:`LocalStack` is what ``agentgroup demo`` (and ``agentgroup demo --dev``) run, and what anyone who
wants the product end to end without a cluster can reuse::

    with LocalStack() as stack:
        stack.kubectl("apply", "-f", "examples/good/")

It starts, in a temporary folder and on 127.0.0.1 only:

1. a :class:`~agentgroup.devcluster.LocalControlPlane` (etcd, kube-apiserver, kube-controller-manager
   for garbage collection) with the AgentGroup CRDs and the upstream CRDs for CodeInterpreter,
   AgentRuntime, Sandbox and SandboxClaim;
2. TLS certificates for the webhook, made by ``agentgroup certs generate``;
3. ``agentgroup webhook``, registered with the API server by a ValidatingWebhookConfiguration whose
   ``clientConfig.url`` points at it and whose ``caBundle`` is the CA from step 2;
4. ``agentgroup controller``, watching every namespace;
5. ``hack/sandbox_simulator.py``, which plays agent-sandbox (no kubelet here runs pods) and marks every
   new Sandbox of an AgentGroup Ready after a short delay.

Each process writes its log to ``<folder>/logs/`` (the control plane's own logs are in
``<folder>/agentgroup-cp-*/logs/``) and is stopped by its PID: SIGTERM, then SIGKILL after a grace
period, in reverse order of start. On Linux every child also gets SIGTERM should this process die
without stopping it (``PR_SET_PDEATHSIG``). The folder is removed after a clean stop, and kept (its path
printed) after a failure or with ``keep=True``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from agentgroup.devcluster import (
    CRDS,
    REPO_ROOT,
    ControlPlaneError,
    LocalControlPlane,
    build_binaries,
    free_port,
    open_local,
)

__all__ = [
    "WEBHOOK_CONFIGURATION",
    "WEBHOOK_NAME",
    "Child",
    "ControlPlaneError",
    "LocalStack",
    "StackError",
    "tail",
]

SIMULATOR = REPO_ROOT / "hack" / "sandbox_simulator.py"
WEBHOOK_CONFIGURATION = "agentgroup-local"
WEBHOOK_NAME = "validate.agentgroups.runtime.agentcube.volcano.sh"
#: The Service name the serving certificate is made for (its DNS names); the API server reaches the
#: local process by URL on 127.0.0.1, which the certificate carries as an IP SAN.
CERT_SERVICE = "agentgroup-webhook"
CERT_NAMESPACE = "agentgroup-system"

_HOST = "127.0.0.1"
_START_ATTEMPTS = 3  # a port picked by free_port() may be taken before the child binds it
_LOG_TAIL = 30


class StackError(RuntimeError):
    """A part of the local stack could not start or stopped unexpectedly; the message says where to look."""


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the thread that started it dies without stopping it."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def tail(path: Path, lines: int = _LOG_TAIL) -> str:
    """The last ``lines`` lines of a log file (a message, never an exception, when it cannot be read)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Child:
    """One process of the stack (not the control plane's: LocalControlPlane keeps those)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def failure(self, what: str) -> StackError:
        code = self.popen.poll()
        state = f"exited with status {code}" if code is not None else f"still running as PID {self.pid}"
        return StackError(
            f"{self.name} {what} ({state}). Last lines of its log {self.log_path}:\n{tail(self.log_path)}"
        )


def _http_status(url: str) -> int:
    try:
        with open_local(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return 0


class LocalStack:
    """The control plane, the webhook, the controller and the Sandbox simulator, as local processes.

    ``say`` receives one line per step in plain words (default: print to stdout). ``ready_after`` is the
    simulator's delay before a new Sandbox becomes Ready. ``controller_args`` are extra flags for
    ``agentgroup controller``. ``stop_timeout`` is how long each process gets between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        *,
        say: Callable[[str], None] | None = None,
        ready_after: str = "1s",
        controller_args: Sequence[str] = (),
        keep: bool = False,
        ready_timeout: float = 90.0,
        stop_timeout: float = 15.0,
        parent_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._say = say if say is not None else (lambda line: print(line, flush=True))
        self.ready_after = ready_after
        self.controller_args = list(controller_args)
        self.keep = keep
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._parent_dir = Path(parent_dir) if parent_dir is not None else None
        self._root: Path | None = None
        self._cp: LocalControlPlane | None = None
        self._children: list[Child] = []
        self.started_pids: dict[str, int] = {}
        """Every process this stack started (control plane included), by name, also after stop()."""
        self._log_paths: dict[str, Path] = {}
        self._stopped = False

    # ----------------------------------------------------------------------------------- properties

    @property
    def root(self) -> Path:
        """The temporary folder: certificates, logs, the control plane's folder (with the kubeconfig)."""
        if self._root is None:
            raise StackError("the local stack has not been started")
        return self._root

    @property
    def folder(self) -> Path | None:
        """:attr:`root`, or None before :meth:`start`."""
        return self._root

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def cert_dir(self) -> Path:
        return self.root / "certs"

    @property
    def control_plane(self) -> LocalControlPlane:
        if self._cp is None:
            raise StackError("the local stack has not been started")
        return self._cp

    @property
    def kubeconfig(self) -> Path:
        """An admin kubeconfig for the local API server (what `export KUBECONFIG=...` points at)."""
        return self.control_plane.kubeconfig

    def log_paths(self) -> dict[str, Path]:
        """Where each process started so far writes (or wrote) its log, by name, control plane first."""
        return dict(self._log_paths)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the venv's kubectl against the local API server."""
        return self.control_plane.kubectl(*args, input=input, check=check, timeout=timeout)

    def dead_children(self) -> list[Child]:
        """The stack's own processes that exited although nobody stopped them."""
        return [c for c in self._children if not c.alive()]

    # ------------------------------------------------------------------------------ start and stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(keep=True if exc_type is not None else None)

    def start(self) -> Self:
        """Start everything and wait until each part is ready; on failure stop what started and raise."""
        if self._root is not None:
            raise StackError("the local stack is already started")
        if self._parent_dir is not None:
            self._parent_dir.mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix="agentgroup-demo-", dir=self._parent_dir))
        self.logs_dir.mkdir()
        try:
            self._start()
        except Exception:
            self.stop(keep=True)  # for its logs
            raise
        except BaseException:  # Ctrl-C and the like: not a failure to look into
            self.stop()
            raise
        return self

    def _start(self) -> None:
        say = self._say
        say("==> Building or reusing the control-plane binaries (hack/controlplane/build.sh)")
        bin_dir = build_binaries(progress=sys.stdout)
        say(f"    using {bin_dir}")

        say("==> Starting a local control plane: etcd, kube-apiserver, kube-controller-manager on 127.0.0.1")
        started = time.monotonic()
        self._cp = LocalControlPlane(
            crds=CRDS, bin_dir=bin_dir, parent_dir=self.root, ready_timeout=self.ready_timeout
        )
        try:
            self._cp.start()
        finally:
            # A failed start has stopped them already; their logs are kept.
            self._log_paths.update({n: self._cp.log_path(n) for n in self._cp.pids})
            self.started_pids.update(self._cp.pids)
        say(
            f"    API server {self._cp.server} ready in {time.monotonic() - started:.1f} s "
            f"(PIDs: {_pids(self._cp.pids)}); CRDs installed: AgentGroup, AgentGroupPolicy, "
            "CodeInterpreter, AgentRuntime, Sandbox, SandboxClaim"
        )

        say(f"==> Making the webhook's TLS certificates: agentgroup certs generate --out {self.cert_dir}")
        self._generate_certs()

        say("==> Starting the admission webhook: agentgroup webhook (HTTPS on 127.0.0.1)")
        webhook = self._start_child(
            "webhook", self._webhook_args, ports=("webhook", "metrics", "health"), health="health"
        )
        url = f"https://{_HOST}:{webhook.ports['webhook']}"
        say(f"    PID {webhook.pid}, serving {url}, log {webhook.log_path}")
        say(
            "==> Registering it with the API server: a ValidatingWebhookConfiguration "
            "(clientConfig.url + caBundle)"
        )
        self._register_webhook(webhook)

        say("==> Starting the controller: agentgroup controller (all namespaces)")
        controller = self._start_child(
            "controller", self._controller_args, ports=("metrics", "health"), health="health"
        )
        say(f"    PID {controller.pid}, log {controller.log_path}")

        say(
            f"==> Starting the Sandbox simulator (plays agent-sandbox: marks each new Sandbox Ready "
            f"after {self.ready_after})"
        )
        simulator = self._start_child("sandbox-simulator", self._simulator_args, ports=())
        self._wait(
            simulator,
            lambda: "marking Sandboxes" in tail(simulator.log_path, 200),
            "watching Sandboxes",
        )
        say(f"    PID {simulator.pid}, log {simulator.log_path}")

    def stop(self, *, keep: bool | None = None) -> None:
        """Stop every process in reverse order of start (SIGTERM, SIGKILL after ``stop_timeout``).

        The folder is removed unless ``keep`` (default: the constructor's ``keep``). Safe to call twice.
        """
        keep = keep if keep is not None else self.keep
        for child in reversed(self._children):
            self._terminate(child)
        self._children.clear()
        if self._cp is not None:
            # The control plane's folder lives in ours: kept whenever ours is.
            self._cp.stop(keep=keep)
        if self._stopped or self._root is None:
            return
        self._stopped = True
        if keep and self._log_paths:  # nothing started: nothing to look into
            self._say(f"agentgroup: the folder {self._root} is kept (logs in {self.logs_dir})")
        else:
            shutil.rmtree(self._root, ignore_errors=True)

    def _terminate(self, child: Child) -> None:
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
        try:
            child.popen.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.popen.kill()
            child.popen.wait()

    # ----------------------------------------------------------------------------------- processes

    def _spawn(self, name: str, args: list[str], ports: dict[str, int]) -> Child:
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                    # Ctrl-C in the terminal reaches only us; we stop the children ourselves, in order.
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
                )
            except OSError as e:
                raise StackError(f"cannot start {name} ({args[0]}): {e}") from None
        child = Child(name, popen, log_path, ports)
        self._children.append(child)
        self.started_pids[name] = child.pid
        self._log_paths[name] = log_path
        return child

    def _start_child(
        self,
        name: str,
        make_args: Callable[[dict[str, int]], list[str]],
        *,
        ports: Sequence[str],
        health: str | None = None,
    ) -> Child:
        """Start a process on fresh ports and wait until it is ready; again on new ports if one was taken."""
        for attempt in range(1, _START_ATTEMPTS + 1):
            picked = {p: free_port() for p in ports}
            child = self._spawn(name, make_args(picked), picked)
            if health is None:
                return child
            try:
                self._wait(child, _ready_probe(f"http://{_HOST}:{picked[health]}/readyz"), "ready (/readyz)")
                return child
            except StackError:
                lost_race = not child.alive() and "address already in use" in tail(child.log_path).lower()
                if attempt == _START_ATTEMPTS or not lost_race:
                    raise
                self._terminate(child)
                self._children.remove(child)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, child: Child, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        interval = 0.05
        while True:
            if not child.alive():
                raise child.failure(f"stopped before it was {what}")
            if check():
                return
            if time.monotonic() >= deadline:
                raise child.failure(f"was not {what} within {self.ready_timeout:.0f} s")
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)

    def _python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def _webhook_args(self, ports: dict[str, int]) -> list[str]:
        return self._python(
            *("-m", "agentgroup", "webhook", "--kubeconfig", str(self.kubeconfig)),
            *("--webhook-bind-address", f"{_HOST}:{ports['webhook']}", "--cert-dir", str(self.cert_dir)),
            *("--metrics-bind-address", f"{_HOST}:{ports['metrics']}"),
            *("--health-probe-bind-address", f"{_HOST}:{ports['health']}", "--log-format", "text"),
        )

    def _controller_args(self, ports: dict[str, int]) -> list[str]:
        return self._python(
            *("-m", "agentgroup", "controller", "--kubeconfig", str(self.kubeconfig)),
            # One local replica: nothing to elect.
            "--leader-elect=false",
            *("--metrics-bind-address", f"{_HOST}:{ports['metrics']}"),
            *("--health-probe-bind-address", f"{_HOST}:{ports['health']}", "--log-format", "text"),
            *self.controller_args,
        )

    def _simulator_args(self, ports: dict[str, int]) -> list[str]:
        return self._python(
            *(str(SIMULATOR), "--kubeconfig", str(self.kubeconfig)),
            *("--ready-after", self.ready_after, "--log-format", "text"),
        )

    # ---------------------------------------------------------------------------------------- webhook

    def _generate_certs(self) -> None:
        args = self._python(
            *("-m", "agentgroup", "certs", "generate"),
            *("--service", CERT_SERVICE, "--namespace", CERT_NAMESPACE, "--out", str(self.cert_dir)),
            *("--ip", _HOST, "--dns-name", "localhost", "--validity", "7d", "--ca-validity", "7d"),
        )
        done = subprocess.run(
            args, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=REPO_ROOT, check=False
        )
        for line in done.stdout.splitlines():
            self._say(f"    {line}")
        if done.returncode != 0:
            raise StackError(
                f"agentgroup certs generate exited with status {done.returncode}:\n"
                f"{done.stderr.strip() or done.stdout.strip()}"
            )

    def webhook_configuration(self, port: int) -> dict[str, Any]:
        """The ValidatingWebhookConfiguration for the local webhook (the chart's rules, a URL client)."""
        from webhook.app import VALIDATE_PATH

        ca = (self.cert_dir / "ca.crt").read_bytes()
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION},
            "webhooks": [
                {
                    "name": WEBHOOK_NAME,
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {
                        "url": f"https://{_HOST}:{port}{VALIDATE_PATH}",
                        "caBundle": base64.b64encode(ca).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": ["runtime.agentcube.volcano.sh"],
                            "apiVersions": ["v1alpha1"],
                            "resources": ["agentgroups"],
                            "operations": ["CREATE", "UPDATE"],
                            "scope": "Namespaced",
                        }
                    ],
                    "failurePolicy": "Fail",
                    "matchPolicy": "Equivalent",
                    "sideEffects": "None",
                    "timeoutSeconds": 5,
                }
            ],
        }

    def _register_webhook(self, webhook: Child) -> None:
        path = self.root / "webhook-configuration.yaml"
        path.write_text(yaml.safe_dump(self.webhook_configuration(webhook.ports["webhook"]), sort_keys=False))
        out = self.kubectl("apply", "-f", str(path)).stdout.strip()
        self._say(f"    $ kubectl apply -f {path}\n    {out}")
        # The API server reads webhook configurations through a watch: wait until it calls ours, which
        # a server-side dry run of a group only the webhook refuses shows (nothing is stored).
        probe = yaml.safe_dump(
            {
                "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
                "kind": "AgentGroup",
                "metadata": {"name": "webhook-probe", "namespace": "default"},
                "spec": {
                    "agents": [{"name": "a", "runtimeRef": {"kind": "AgentRuntime", "name": "probe"}}],
                    "dependencies": [{"from": "a", "to": "ghost"}],
                },
            }
        )

        def judged() -> bool:
            r = self.kubectl("apply", "--dry-run=server", "-f", "-", input=probe, check=False)
            return r.returncode != 0 and "UnknownAgent" in r.stderr

        self._wait(webhook, judged, "called by the API server")


def _ready_probe(url: str) -> Callable[[], bool]:
    return lambda: _http_status(url) == 200


def _pids(pids: dict[str, int]) -> str:
    return ", ".join(f"{name} {pid}" for name, pid in pids.items())
