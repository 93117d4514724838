"""LocalControlPlane's process handling, with stand-in binaries (the real ones are exercised in tests/e2e)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from agentgroup.devcluster import ControlPlaneError, LocalControlPlane, build_binaries

# A stand-in etcd: answers /health on its client URL; with IGNORE_TERM it ignores SIGTERM, so that
# stop() has to SIGKILL it.
FAKE_ETCD = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import http.server, os, signal, sys
    if os.path.exists(os.path.join(os.path.dirname(sys.argv[0]), "IGNORE_TERM")):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    url = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--listen-client-urls="))
    host, port = url.removeprefix("http://").split(":")
    with open(os.path.join(os.getcwd(), "fake-etcd.pid"), "w") as f:
        f.write(str(os.getpid()))

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{{"health":"true"}}')

        def log_message(self, *args):
            pass

    http.server.HTTPServer((host, int(port)), Health).serve_forever()
    """
)

# A stand-in kube-apiserver: /readyz over TLS with the given certificates, client certificates required.
FAKE_APISERVER = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import http.server, ssl, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args["tls-cert-file"], args["tls-private-key-file"])
    ctx.load_verify_locations(args["client-ca-file"])
    ctx.verify_mode = ssl.CERT_REQUIRED

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer((args["bind-address"], int(args["secure-port"])), Ready)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
    """
)


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _fake_bin(tmp_path: Path, apiserver: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "etcd", FAKE_ETCD)
    _script(bin_dir / "kube-apiserver", apiserver)
    _script(bin_dir / "kube-controller-manager", "#!/bin/sh\nexit 1\n")
    return bin_dir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive either (its parent, this process, has reaped it by now in any case).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_missing_binaries_say_how_to_build_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTGROUP_BIN_DIR", str(tmp_path))
    with pytest.raises(
        ControlPlaneError, match=r"etcd, kube-apiserver, kube-controller-manager not found"
    ) as e:
        build_binaries()
    assert "hack/controlplane/build.sh" in str(e.value)


def test_failed_component_reports_its_log_keeps_the_folder_and_stops_everything(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, "#!/bin/sh\necho 'Error: unknown flag: --bogus' >&2\nexit 3\n")
    (bin_dir / "IGNORE_TERM").touch()
    cp = LocalControlPlane(bin_dir=bin_dir, kubectl="/bin/true", parent_dir=tmp_path, stop_timeout=1)

    with pytest.raises(ControlPlaneError) as e:
        cp.start()

    message = str(e.value)
    assert "kube-apiserver stopped before it was ready (/readyz) (exited with code 3)" in message
    assert "Error: unknown flag: --bogus" in message  # the end of its log
    assert str(cp.log_path("kube-apiserver")) in message
    assert cp.pids == {}
    # The stand-in etcd ignored SIGTERM: it was killed after stop_timeout, by its PID.
    etcd_pid = int((cp.root / "fake-etcd.pid").read_text())
    assert not _alive(etcd_pid)
    assert cp.root.is_dir()  # kept for its logs
    assert cp.log_path("etcd").is_file()

    cp.stop()  # a second stop is harmless and still keeps nothing running
    assert cp.root.is_dir()


def test_clean_stop_terminates_by_pid_and_removes_the_folder(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, FAKE_APISERVER)
    with LocalControlPlane(
        bin_dir=bin_dir, kubectl="/bin/true", parent_dir=tmp_path, controllers=(), stop_timeout=1
    ) as cp:
        pids = cp.pids
        assert set(pids) == {"etcd", "kube-apiserver"}
        assert all(_alive(pid) for pid in pids.values())
        assert cp.server.startswith("https://127.0.0.1:")
        assert "client-certificate-data" in cp.kubeconfig.read_text()
        root = cp.root
    assert not any(_alive(pid) for pid in pids.values())
    assert cp.pids == {}
    assert not root.exists()


def test_exception_in_the_with_block_keeps_the_folder(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, FAKE_APISERVER)
    cp = LocalControlPlane(bin_dir=bin_dir, kubectl="/bin/true", parent_dir=tmp_path, controllers=())
    with pytest.raises(RuntimeError, match="a test failed"), cp:
        raise RuntimeError("a test failed")
    assert cp.pids == {}
    assert cp.log_path("kube-apiserver").is_file()
