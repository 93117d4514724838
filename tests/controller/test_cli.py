"""`agentgroup controller`: its flags, and clear errors (never a traceback) for bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentgroup.cli import main


def test_help_lists_the_shared_and_controller_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["controller", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--kubeconfig",
        "--metrics-bind-address",
        "--health-probe-bind-address",
        "--log-level",
        "--log-format",
        "--leader-elect",
        "--max-concurrent-reconciles",
        "--sandbox-api-version",
        "--startup-timeout",
    ):
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-concurrent-reconciles", "0"], '"0" must be at least 1'),
        (["--startup-timeout", "forever"], '"forever" is not a duration'),
        (["--leader-elect=maybe"], '"maybe" is not true or false'),
        (["--sandbox-api-version", "v2"], "invalid choice: 'v2'"),
        (["--metrics-bind-address", "nowhere"], "--metrics-bind-address: bad listen address 'nowhere'"),
    ],
)
def test_bad_flag_values_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["controller", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_missing_kubeconfig_exits_1_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    # A process of its own: the command sets up the process's logging.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentgroup",
            "controller",
            "--kubeconfig",
            str(missing),
            "--log-format",
            "text",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"kubeconfig '{missing}' does not exist" in done.stderr
    assert "Traceback" not in done.stderr
