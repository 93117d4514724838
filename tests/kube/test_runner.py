"""The process runner in a real subprocess: signals stop the coroutine gracefully, twice forces exit."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from agentgroup.runner import run_process

    async def main(stop: asyncio.Event) -> int:
        print("ready", type(asyncio.get_running_loop()).__module__, flush=True)
        if sys.argv[1] == "raise":
            raise RuntimeError("startup bug")
        await stop.wait()
        print("draining", flush=True)
        if sys.argv[1] == "hang":
            await asyncio.Event().wait()
        return int(sys.argv[1])

    sys.exit(run_process(main))
    """
)


class Child:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.out = b""

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Read stdout until ``text`` appears, failing after ``timeout`` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} in the child's output: {self.out!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"the child exited before {text!r}: {self.out!r}")
                self.out += chunk
        return self.out.decode()

    def exit_code(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[[str], Child]]:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    started: list[subprocess.Popen[bytes]] = []

    def start(arg: str) -> Child:
        proc = subprocess.Popen(
            [sys.executable, str(script), arg],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        return Child(proc)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_process_gracefully(child: Callable[[str], Child], sig: signal.Signals) -> None:
    proc = child("0")
    proc.wait_for("ready uvloop")  # on uvloop
    proc.proc.send_signal(sig)
    assert proc.exit_code() == 0
    assert "draining" in proc.wait_for("draining")


def test_the_coroutine_decides_the_exit_code(child: Callable[[str], Child]) -> None:
    proc = child("3")
    proc.wait_for("ready")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.exit_code() == 3


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_second_signal_forces_the_exit(
    child: Callable[[str], Child], sig: signal.Signals, code: int
) -> None:
    proc = child("hang")
    proc.wait_for("ready")
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait_for("draining")
    proc.proc.send_signal(sig)
    assert proc.exit_code() == code


def test_an_escaping_exception_is_logged_and_exits_1(child: Callable[[str], Child]) -> None:
    proc = child("raise")
    assert proc.exit_code() == 1
    assert proc.proc.stderr is not None
    err = proc.proc.stderr.read().decode()
    assert "the process failed" in err
    assert "RuntimeError: startup bug" in err
