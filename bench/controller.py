"""The controller at scale on the real control plane: time to Running, API writes per group, steady state.

Starts a local control plane (etcd, kube-apiserver, kube-controller-manager), ``agentgroup controller``
and ``hack/sandbox-simulator`` (Sandboxes Ready ``--ready-after`` after they appear) as processes.
For each N it applies N AgentGroups of 5 agents in a chain (a -> b -> c -> d -> e) in a fresh
namespace and measures:

- seconds from ``kubectl apply`` until every group is Running;
- API writes per group, from the API server's own ``apiserver_request_total``: Sandbox creates and
  AgentGroup patches are the controller's (goal: agents + 2 = 7 per group), Events are counted apart,
  Sandbox status patches are the simulator's and Lease updates the leader's heartbeat. A group whose
  startup outlasts ``--status-interval`` (under load) also gets a progress-only status write per
  interval;
- the controller's writes during ``--steady`` seconds once everything is Running (goal: 0);
- the controller's peak RSS (VmHWM) so far.

Then prints a table and how each figure grows per step of N (about 10x per 10x N means linear).
Run: ``.venv/bin/python -m bench.controller [--sizes 10,100,1000] [--steady 60]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentgroup.devcluster import CRDS, REPO_ROOT, LocalControlPlane, free_port

AGENTS = ("a", "b", "c", "d", "e")
RUNTIME = """\
apiVersion: runtime.agentcube.volcano.sh/v1alpha1
kind: CodeInterpreter
metadata: {name: py}
spec:
  template: {image: "python:3.12"}
"""
_SAMPLE = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def groups_yaml(n: int) -> str:
    docs = []
    for i in range(n):
        doc = {
            "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
            "kind": "AgentGroup",
            "metadata": {"name": f"g{i:04d}"},
            "spec": {
                "agents": [
                    {"name": a, "runtimeRef": {"kind": "CodeInterpreter", "name": "py"}} for a in AGENTS
                ],
                "dependencies": [{"from": x, "to": y} for x, y in itertools.pairwise(AGENTS)],
            },
        }
        docs.append(json.dumps(doc))
    return "\n---\n".join(docs)


def write_requests(cp: LocalControlPlane) -> Counter[str]:
    """Successful write requests so far, by what they were: ``verb resource[/subresource]``."""
    text = cp.kubectl("get", "--raw", "/metrics").stdout
    counts: Counter[str] = Counter()
    for labels_text, value in _SAMPLE.findall(text):
        labels = dict(_LABEL.findall(labels_text))
        if labels.get("verb") not in ("POST", "PATCH", "PUT", "DELETE") or not labels.get(
            "code", ""
        ).startswith("2"):
            continue
        what = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        counts[f"{labels['verb']} {what}"] += int(float(value))
    return counts


def phases(cp: LocalControlPlane, namespace: str) -> Counter[str]:
    out = cp.kubectl(
        "get", "agentgroups", "-n", namespace, "-o", r"jsonpath={range .items[*]}{.status.phase}{'\n'}{end}"
    ).stdout
    return Counter(line or "(none)" for line in out.splitlines())


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


@dataclass
class Row:
    n: int
    seconds: float
    creates: float
    patches: float
    events: float
    steady_writes: int
    steady_events: int
    rss_mib: float

    @property
    def writes(self) -> float:
        return self.creates + self.patches


def controller_writes(delta: Counter[str]) -> tuple[int, int, int]:
    """(Sandbox creates, AgentGroup patches, Event creates) in a ``write_requests`` difference."""
    creates = delta["POST sandboxes"] + delta["POST sandboxclaims"]
    patches = sum(v for k, v in delta.items() if k.startswith(("PATCH agentgroups", "PUT agentgroups")))
    return creates, patches, delta["POST events"]


def measure(cp: LocalControlPlane, controller: subprocess.Popen[bytes], n: int, steady: float) -> Row:
    namespace = f"bench-{n}"
    cp.kubectl("create", "namespace", namespace)
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=RUNTIME)
    before = write_requests(cp)
    started = time.monotonic()
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=groups_yaml(n), timeout=600)
    wait(lambda: phases(cp, namespace)["Running"] == n, 3600, f"{n} groups to be Running")
    seconds = time.monotonic() - started
    after = write_requests(cp)
    creates, patches, events = controller_writes(after - before)
    time.sleep(steady)  # the steady state itself is what is measured
    quiet = write_requests(cp) - after
    steady_creates, steady_patches, steady_events = controller_writes(quiet)
    row = Row(
        n,
        seconds,
        creates / n,
        patches / n,
        events / n,
        steady_creates + steady_patches,
        steady_events,
        peak_rss_mib(controller.pid),
    )
    cp.kubectl("delete", "namespace", namespace, "--wait=false")
    return row


def growth(rows: list[Row], figure: Callable[[Row], float]) -> str:
    steps = []
    for a, b in itertools.pairwise(rows):
        va, vb = figure(a), figure(b)
        steps.append(f"x{vb / va:.1f} per x{b.n // a.n} N" if va > 0 else "-")
    return ", ".join(steps) or "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default="10,100,1000", help="numbers of groups, comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--steady", type=float, default=60.0, help="seconds of steady state to watch (default: 60)"
    )
    p.add_argument("--ready-after", default="200ms", help="the simulator's delay (default: %(default)s)")
    p.add_argument("--workers", default="16", help="--max-concurrent-reconciles (default: %(default)s)")
    p.add_argument(
        "--status-interval",
        default="5s",
        help="the controller's --status-update-interval (default: %(default)s)",
    )
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    health = free_port()
    with LocalControlPlane(crds=CRDS) as cp:
        logs = cp.root / "logs"
        common = ["--kubeconfig", str(cp.kubeconfig), "--log-format", "text"]
        with (logs / "controller.log").open("ab") as out:
            controller = subprocess.Popen(
                [
                    *(sys.executable, "-m", "agentgroup", "controller", *common, "--log-level", "warning"),
                    *("--metrics-bind-address", "0", "--health-probe-bind-address", f"127.0.0.1:{health}"),
                    *(
                        "--max-concurrent-reconciles",
                        args.workers,
                        "--status-update-interval",
                        args.status_interval,
                    ),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        with (logs / "simulator.log").open("ab") as out:
            simulator = subprocess.Popen(
                [str(REPO_ROOT / "hack" / "sandbox-simulator"), *common, "--ready-after", args.ready_after],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        try:
            wait(lambda: ready(health), 60, "the controller to be ready")
            wait(lambda: "synced" in (logs / "simulator.log").read_text(), 60, "the simulator to be ready")
            rows = []
            for n in sizes:
                row = measure(cp, controller, n, args.steady)
                rows.append(row)
                print(f"N={n}: Running after {row.seconds:.1f} s", file=sys.stderr, flush=True)
        finally:
            for proc in (controller, simulator):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)

    print(
        f"\nAgentGroups of {len(AGENTS)} chained agents; simulator Ready after {args.ready_after}; "
        f"{args.workers} workers; progress-only status writes at most every {args.status_interval}; "
        f"steady state watched for {args.steady:.0f} s\n"
    )
    header = (
        f"{'N':>6} {'to Running':>11} {'groups/s':>9} {'writes/group':>13} {'(creates':>9} {'patches)':>9} "
        f"{'events/group':>13} {'steady writes':>14} {'steady events':>14} {'peak RSS':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.n:>6} {r.seconds:>10.1f}s {r.n / r.seconds:>9.1f} {r.writes:>13.2f} {r.creates:>9.2f} "
            f"{r.patches:>9.2f} {r.events:>13.2f} {r.steady_writes:>14} {r.steady_events:>14} "
            f"{r.rss_mib:>7.0f} MiB"
        )
    print(f"\ngoal: writes/group <= {len(AGENTS) + 2} (agents + 2), steady writes = 0")
    print("growth as N grows:")
    print(f"  time to Running:   {growth(rows, lambda r: r.seconds)}")
    print(f"  writes per group:  {growth(rows, lambda r: r.writes)} (flat = constant per group)")
    print(
        f"  peak RSS:          {growth(rows, lambda r: r.rss_mib)} (cumulative: caches hold earlier rounds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
