"""`agentgroup demo` and `agentgroup demo --dev` as users run them (`make demo`, `make dev`).

Each test runs the command as its own process, which starts its own control plane, webhook, controller
and Sandbox simulator (not the session's `cluster`), in a temporary folder under the test's tmp_path
(TMPDIR), so that "nothing was left running" can be checked two ways: the PIDs the command reports,
and any process whose command line still mentions that folder.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from agentgroup.devcluster import REPO_ROOT, find_kubectl
from tests.e2e.kube import wait_for

EXPECTED_REASONS = {"UnknownAgent", "DependencyCycle", "RuntimeNotFound"}  # examples/demo/bad-group.yaml


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "AGENTGROUP_KEEP_CLUSTER")}
    return {**env, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has exited


def _processes_mentioning(folder: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline and _alive(int(proc.name)):
            found.append(f"{proc.name}: {cmdline}")
    return found


def _assert_nothing_left(pids: list[int], tmp_path: Path, output: str) -> None:
    wait_for(lambda: not [p for p in pids if _alive(p)] or None, 30, "the reported PIDs to be gone")
    assert _processes_mentioning(tmp_path) == [], output
    assert list(tmp_path.glob("agentgroup-demo-*")) == [], f"the demo's folder was left behind\n{output}"


def _summary(output: str) -> dict[str, str]:
    return dict(re.findall(r"^SUMMARY ([\w-]+): (.*)$", output, re.MULTILINE))


def test_the_demo_walks_through_every_step_and_stops_everything(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentgroup", "demo"],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    assert done.returncode == 0, output
    summary = _summary(done.stdout)

    rejected = re.fullmatch(r"yes \(reasons: (.*)\)", summary.get("bad-group-rejected", ""))
    assert rejected is not None, output
    assert set(rejected.group(1).split(", ")) == EXPECTED_REASONS, output
    assert summary["good-group-running"].startswith("yes"), output
    assert summary["order"] == "planner < coder < reviewer", output
    assert summary["recovered-after-sandbox-delete"].startswith("yes"), output
    assert summary["sandboxes-removed-with-group"].startswith("yes"), output
    assert summary["stopped-everything"].startswith("yes"), output
    assert done.stdout.rstrip().endswith("agentgroup demo: every check holds."), output

    # What the user saw: kubectl's refusal with every violation, and the group starting in order.
    assert '* spec.dependencies[3].to: UnknownAgent: "tester" is not an agent of this group' in done.stdout
    lines = done.stdout.splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert (
        first("planner: Sandbox research-task-planner-0 Ready")
        < first("coder: Sandbox research-task-coder-0 created")
        < first("coder: Sandbox research-task-coder-1 Ready")
        < first("reviewer: Sandbox research-task-reviewer-0 created")
        < first("group status: phase Running")
    ), output

    pids = [int(p) for p in summary["pids"].split()]
    assert len(pids) == 6, output  # etcd, kube-apiserver, kube-controller-manager, webhook, controller, sim
    _assert_nothing_left(pids, tmp_path, output)


class _Lines:
    """The lines a process prints, read by a thread, so the test can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def find(self, prefix: str) -> str | None:
        with self._lock:
            return next((line for line in self.lines if line.startswith(prefix)), None)

    def text(self, *, finished: bool = False) -> str:
        """What was printed so far; with ``finished``, all of it (the process has exited)."""
        if finished:
            self._thread.join(timeout=30)
        with self._lock:
            return "\n".join(self.lines)


def test_dev_keeps_the_environment_for_the_user_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentgroup", "demo", "--dev"],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Lines(proc)
    try:
        # The banner ends with this line; an early exit ends the wait too, and the output says why.
        wait_for(lambda: out.find("Press Ctrl-C") or proc.poll() is not None, 300, "the banner")
        export = out.find("export KUBECONFIG=")
        processes = out.find("processes: ")
        assert export is not None, out.text()
        assert processes is not None, out.text()
        kubeconfig = export.split("=", 1)[1]
        pids = [int(p) for p in re.findall(r"=(\d+)", processes)]
        assert len(pids) == 6, processes  # etcd, kube-apiserver, kube-controller-manager, ours

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(find_kubectl()), "--kubeconfig", kubeconfig, *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )

        # What the banner suggests works as it says: the runtimes are there, the webhook and the
        # controller answer, and the simulator makes Sandboxes Ready.
        refused = kubectl("apply", "-f", "examples/bad/DependencyCycle.yaml")
        assert refused.returncode != 0
        assert "spec.dependencies: DependencyCycle:" in refused.stderr, refused.stderr
        applied = kubectl("apply", "-f", "examples/good/02-group.yaml")
        assert applied.returncode == 0, applied.stderr
        phase = ("get", "agentgroup", "research-task", "-o", "jsonpath={.status.phase}")
        wait_for(lambda: kubectl(*phase).stdout == "Running", 120, "research-task to be Running")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        code = proc.wait(timeout=120)
    output = out.text(finished=True)
    assert code == 0, output
    assert output.rstrip().endswith("agentgroup demo --dev: stopped 6 processes"), output
    _assert_nothing_left(pids, tmp_path, output)
