"""`agentgroup webhook` on the command line: its flags, and clear errors for values it cannot use."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agentgroup.cli import main


def run_webhook(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agentgroup", "webhook", "--log-format", "text", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_help_lists_the_shared_flags_and_the_webhook_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--kubeconfig",
        "--webhook-bind-address",
        "--cert-dir",
        "--metrics-bind-address",
        "--health-probe-bind-address",
        "--log-level",
        "--log-format",
        "--cert-mode",
    ):
        assert flag in out
    assert "default: /tmp/k8s-webhook-server/serving-certs" in out


@pytest.mark.parametrize(
    "flag", ["--webhook-bind-address", "--metrics-bind-address", "--health-probe-bind-address"]
)
def test_an_unusable_address_names_the_flag(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook", flag, "localhost"]) == 2
    assert capsys.readouterr().err == (
        f"agentgroup webhook: {flag}: bad listen address 'localhost': use HOST:PORT, :PORT, or 0 to disable\n"
    )


def test_a_missing_kubeconfig_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    done = run_webhook("--kubeconfig", str(missing))
    assert done.returncode == 1
    assert f"kubeconfig '{missing}' does not exist: pass --kubeconfig PATH" in done.stderr
    assert "Traceback" not in done.stderr


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_an_address_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_webhook("--kubeconfig", str(kubeconfig), "--webhook-bind-address", address)
    assert done.returncode == 1
    assert f"--webhook-bind-address: cannot listen on {address}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_self_managed_certificates_need_the_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook", "--cert-mode", "self-managed"]) == 2
    assert capsys.readouterr().err == (
        "agentgroup webhook: --cert-mode self-managed needs --service-name and --service-namespace\n"
    )
