"""Running the real ``agentgroup`` entry point as a user does: a subprocess from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def agentgroup() -> Run:
    """``agentgroup(*args, stdin=None, env=None)``: the finished process; never a traceback."""

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "agentgroup", *args],
            input=stdin or "",
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**os.environ, "AGENTGROUP_DEBUG": "1", **(env or {})},
            timeout=60,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run
