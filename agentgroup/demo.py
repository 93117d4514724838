"""``agentgroup demo``: the whole product on a local control plane, narrated, with a checkable summary.

``agentgroup demo`` starts :class:`agentgroup.stack.LocalStack` (a real kube-apiserver, etcd and
kube-controller-manager, the webhook over TLS, the controller and the Sandbox simulator, all on
127.0.0.1) and walks through what a user does with AgentGroups:

1. apply the runtimes (``examples/good/01-runtimes.yaml``);
2. apply a bad group (``examples/demo/bad-group.yaml``) and show the webhook's answer, every violation
   with its reason code;
3. apply the good group (``examples/good/02-group.yaml``: planner -> coder -> reviewer) and show, as it
   happens, its phase, each agent's status and each Sandbox created and made Ready;
4. delete a Sandbox and show the group recovering (``failurePolicy: RetrySubAgent``);
5. delete the group and show its Sandboxes going away (owner references, the garbage collector).

It ends with ``SUMMARY <check>: yes|no (...)`` lines and exits 0 only when every check holds; it stops
every process it started, by PID, also on an error, Ctrl-C (exit 130) or SIGTERM (exit 143).

``agentgroup demo --dev`` starts the same environment, applies the example runtimes into the
``default`` namespace, prints the ``export KUBECONFIG=...`` line to use from another shell, and keeps
everything running until Ctrl-C or SIGTERM (exit 0 then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentgroup.stack import LocalStack

__all__ = ["register", "run"]

# Top-level imports stay light: the ``agentgroup`` entry point imports this module for --help.
REPO_ROOT = Path(__file__).resolve().parent.parent  # as agentgroup.devcluster.REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
RUNTIMES = EXAMPLES / "good" / "01-runtimes.yaml"
GOOD_GROUP = EXAMPLES / "good" / "02-group.yaml"
BAD_GROUP = EXAMPLES / "demo" / "bad-group.yaml"
GROUP = "research-task"  # metadata.name in GOOD_GROUP
BAD_NAME = "research-task-broken"  # metadata.name in BAD_GROUP
LOST_SANDBOX = f"{GROUP}-coder-1"
SANDBOXES = "sandboxes.agents.x-k8s.io"
GROUP_LABEL = "runtime.agentcube.io/agent-group"
AGENT_LABEL = "runtime.agentcube.io/agent-name"

#: Controller flags for a small local fleet: every status change written at once (so the demo shows each
#: agent's progress as it happens, not batched every 5 s) and a lost Sandbox retried after 1 s.
CONTROLLER_ARGS = ("--status-update-interval", "0s", "--retry-backoff", "1s")

#: The checks of the summary, in the order the demo establishes them.
CHECKS = (
    "bad-group-rejected",
    "good-group-running",
    "order",
    "recovered-after-sandbox-delete",
    "sandboxes-removed-with-group",
    "stopped-everything",
)

_REASON_LINE = re.compile(r"^\* (?P<field>\S+): (?P<reason>[A-Z][A-Za-z]+): ")


class DemoError(RuntimeError):
    """A step of the demo did not do what it should; the message says which and what was seen."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; raised in the main thread so that everything is stopped on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ------------------------------------------------------------------------------------- the command


def _duration(text: str) -> str:
    from shared.sandboxes import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command to the ``agentgroup`` command."""
    p = subparsers.add_parser(
        "demo",
        help="run the whole product on a local control plane and walk through it",
        description="Start a local control plane (etcd, kube-apiserver, kube-controller-manager), the "
        "webhook over TLS, the controller and a Sandbox simulator on 127.0.0.1, then walk through "
        "runtimes, a rejected group, a group starting in dependency order, a lost Sandbox being "
        "recreated and a group deletion. Ends with SUMMARY lines; exit 0 when every check holds. "
        "Everything started is stopped on exit, on an error and on Ctrl-C.",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="start the same environment with the example runtimes, print the KUBECONFIG to use and "
        "keep it running until Ctrl-C, to try your own AgentGroups",
    )
    p.add_argument(
        "--namespace", default="demo", metavar="NS", help="the walkthrough's namespace (default: %(default)s)"
    )
    p.add_argument(
        "--ready-after",
        type=_duration,
        default="1s",
        metavar="DURATION",
        help="the simulator's delay before a new Sandbox is Ready (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long one step may take before the demo gives up (default: %(default)s)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (certificates, kubeconfig, logs) after a clean exit",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Output()
    if args.dev:
        return _dev(args, out)
    return _demo(args, out)


# --------------------------------------------------------------------------------------------- output


class Output:
    """Plain-words lines on stdout, flushed at once (the demo is watched as it runs, often through make)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, line: str = "") -> None:
        print(line, flush=True)

    def step(self, title: str) -> None:
        self.say()
        self.say(f"==> {title}")

    def command(self, argv: list[str], stdout: str, stderr: str = "", note: str = "") -> None:
        self.say(f"    $ kubectl {' '.join(_shown(a) for a in argv)}" + (f"    ({note})" if note else ""))
        for line in (stdout + stderr).rstrip("\n").splitlines():
            self.say(f"    {line}")

    def mark(self) -> None:
        """Elapsed times are counted from now on."""
        self.t0 = time.monotonic()

    def event(self, at: float, text: str) -> None:
        self.say(f"    {f'+{at - self.t0:.1f}s':>7}  {text}")


def _shown(arg: str) -> str:
    """A repository path as the user would type it from the repository's root."""
    with contextlib.suppress(ValueError):
        return str(Path(arg).relative_to(REPO_ROOT))
    return arg


# ------------------------------------------------------------------------------------------ signals


@contextlib.contextmanager
def _signals(handler: Callable[[int, FrameType | None], None] | int) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` (a function or SIG_IGN) inside the block."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # One interruption is enough: further signals are ignored while everything is being stopped.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


# ------------------------------------------------------------------------------------------ watching


@dataclass(frozen=True)
class Seen:
    """One watch event, stamped when it arrived."""

    at: float
    kind: str  # "group" or "sandbox"
    event: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]


class Watcher:
    """List+watch AgentGroups and Sandboxes of one namespace from a background thread.

    The thread runs its own event loop with two informers (shared.kube); their events are queued and
    the main thread takes them with :meth:`take`, so every line is printed from one thread, in order.
    """

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self._cond = threading.Condition()
        self._events: list[Seen] = []
        self._synced = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)

    def start(self, timeout: float) -> None:
        self._thread.start()
        if not self._synced.wait(timeout):
            self._check()
            raise DemoError(f"the watch on AgentGroups and Sandboxes did not sync within {timeout:.0f} s")
        self._check()

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def take(self, timeout: float) -> list[Seen]:
        """The events that arrived since the last call, waiting up to ``timeout`` for the first."""
        with self._cond:
            if not self._events and self._error is None:
                self._cond.wait(timeout)
            taken, self._events = self._events, []
        self._check()
        return taken

    def _check(self) -> None:
        if self._error is not None:
            raise DemoError(f"watching the API server failed: {self._error}") from self._error

    def _on(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        with self._cond:
            self._events.append(Seen(time.monotonic(), kind, event, obj))
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            self._synced.set()

    async def _main(self) -> None:
        from shared.kube import Informer, Kube, api_client
        from shared.kube.resources import (
            AGENT_GROUPS,
            SANDBOX_GROUP,
            SANDBOXES_V1ALPHA1,
            SANDBOXES_V1BETA1,
        )

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Kube(await api_client(str(self.kubeconfig))) as kube:
            served = await kube.discover(SANDBOX_GROUP)
            res = next(
                (r for v in served for r in (SANDBOXES_V1ALPHA1, SANDBOXES_V1BETA1) if r.version == v), None
            )
            if res is None:
                raise DemoError(f"the API server does not serve Sandboxes ({SANDBOX_GROUP})")
            informers = [
                Informer(kube, AGENT_GROUPS, namespace=self.namespace, handler=partial(self._on, "group")),
                Informer(kube, res, namespace=self.namespace, handler=partial(self._on, "sandbox")),
            ]
            runs = [asyncio.create_task(i.run(self._stop)) for i in informers]
            await asyncio.gather(*(i.synced.wait() for i in informers))
            self._synced.set()
            await asyncio.gather(*runs)


# ------------------------------------------------------------------------------------------ narrating


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or ()
    )


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            found: dict[str, Any] = c
            return found
    return {}


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels


@dataclass
class Narrator:
    """Turns watch events into plain-words lines and keeps what the checks need.

    ``started[agent]`` and ``ready[agent]`` are the positions, in the stream of Sandbox events, of the
    agent's first Sandbox created and of the moment all its Sandboxes were Ready: one watch delivers
    them in the order the API server stored them, so comparing positions compares what happened first.
    """

    out: Output
    group: dict[str, Any] | None = None
    sandboxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)
    degraded_seen: bool = False
    started: dict[str, int] = field(default_factory=dict)
    ready: dict[str, int] = field(default_factory=dict)
    _seq: int = 0
    _agents: dict[str, tuple[str, int]] = field(default_factory=dict)
    _degraded: str = ""
    _agent_ready: dict[str, bool] = field(default_factory=dict)

    # --- the group's spec, as the controller reads it

    def replicas(self) -> dict[str, int]:
        spec = (self.group or {}).get("spec") or {}
        return {a["name"]: int(a.get("replicas", 1)) for a in spec.get("agents") or ()}

    def edges(self) -> list[tuple[str, str]]:
        spec = (self.group or {}).get("spec") or {}
        return [(d["from"], d["to"]) for d in spec.get("dependencies") or ()]

    def agent_sandboxes(self, agent: str) -> list[dict[str, Any]]:
        return [s for s in self.sandboxes.values() if _labels(s).get(AGENT_LABEL) == agent]

    def agent_ready(self, agent: str) -> bool:
        want = self.replicas().get(agent, 1)
        return sum(_ready(s) for s in self.agent_sandboxes(agent)) >= want

    # --- events

    def feed(self, seen: Seen) -> None:
        if seen.kind == "group":
            if (seen.obj.get("metadata") or {}).get("name") == GROUP:
                self._on_group(seen)
        elif _labels(seen.obj).get(GROUP_LABEL) == GROUP:
            self._on_sandbox(seen)

    def _on_group(self, seen: Seen) -> None:
        obj, say = seen.obj, partial(self.out.event, seen.at)
        if seen.event == "DELETED":
            self.group = None
            say(f"AgentGroup {GROUP} deleted")
            return
        first = self.group is None
        self.group = obj
        status = obj.get("status") or {}
        if first:
            say(f"AgentGroup {GROUP} created" + ("" if status else " (no status yet)"))
        phase = str(status.get("phase") or "")
        if phase and (not self.phases or self.phases[-1] != phase):
            self.phases.append(phase)
            ready = _condition(obj, "Ready")
            detail = f": {ready['message']}" if ready.get("message") else ""
            say(f"group status: phase {phase}{detail}")
        for agent in status.get("agents") or ():
            name, agent_phase = str(agent.get("name")), str(agent.get("phase") or "")
            view = (agent_phase, int(agent.get("readyReplicas") or 0))
            if self._agents.get(name) != view:
                self._agents[name] = view
                want = self.replicas().get(name, 1)
                detail = agent.get("message") or f"{view[1]} of {want} Sandboxes Ready"
                say(f"group status: {name} {agent_phase} ({detail})")
        degraded = _condition(obj, "Degraded")
        state = str(degraded.get("status") or "")
        if state and state != self._degraded:
            if state == "True":
                self.degraded_seen = True
                say(f"group status: Degraded ({degraded.get('reason')}: {degraded.get('message')})")
            elif self._degraded == "True":
                say("group status: no longer Degraded (every Sandbox is Ready again)")
            self._degraded = state

    def _on_sandbox(self, seen: Seen) -> None:
        obj, say = seen.obj, partial(self.out.event, seen.at)
        self._seq += 1
        name = str(obj["metadata"]["name"])
        agent = _labels(obj).get(AGENT_LABEL, "?")
        old = self.sandboxes.get(name)
        became_ready = False
        if seen.event == "DELETED":
            self.sandboxes.pop(name, None)
            say(f"{agent}: Sandbox {name} deleted")
        else:
            self.sandboxes[name] = obj
            if old is None or old["metadata"].get("uid") != obj["metadata"].get("uid"):
                self.started.setdefault(agent, self._seq)
                say(f"{agent}: Sandbox {name} created")
            became_ready = _ready(obj) and (old is None or not _ready(old))
        now_ready = self.agent_ready(agent)
        if became_ready:
            want = self.replicas().get(agent, 1)
            count = sum(_ready(s) for s in self.agent_sandboxes(agent))
            line = f"{agent}: Sandbox {name} Ready ({count} of {want})"
            if now_ready and not self._agent_ready.get(agent):
                self.ready.setdefault(agent, self._seq)
                free = [
                    to
                    for frm, to in self.edges()
                    if frm == agent
                    and not self.agent_sandboxes(to)
                    and all(self.agent_ready(f) for f, t in self.edges() if t == to)
                ]
                line += f" -> {agent} is Ready" + "".join(f", {to} may start" for to in free)
            say(line)
        self._agent_ready[agent] = now_ready

    def state(self) -> str:
        """The group and its Sandboxes as last seen, in a few words (for a timeout's message)."""
        if self.group is None:
            where = f"no AgentGroup {GROUP}"
        else:
            status = self.group.get("status") or {}
            where = f"{GROUP} phase {status.get('phase') or '(none)'}"
        ready = sum(_ready(s) for s in self.sandboxes.values())
        return f"{where}, {ready} of {len(self.sandboxes)} Sandboxes Ready"

    # --- conditions the steps wait for

    def running(self) -> bool:
        g = self.group or {}
        status = g.get("status") or {}
        return (
            status.get("phase") == "Running"
            and status.get("observedGeneration") == (g.get("metadata") or {}).get("generation")
            and status.get("readyAgents") == status.get("totalAgents")
        )

    def order(self) -> list[str]:
        return sorted(self.started, key=self.started.__getitem__)

    def order_violations(self) -> list[str]:
        """Edges whose ``to`` started before its ``from`` was Ready (empty when the order held)."""
        wrong = []
        for frm, to in self.edges():
            if to in self.started and not (frm in self.ready and self.ready[frm] < self.started[to]):
                wrong.append(f"{to} started before {frm} was Ready")
        return wrong


# ------------------------------------------------------------------------------------------ the demo


@dataclass
class Checks:
    results: dict[str, tuple[bool | None, str]] = field(
        default_factory=lambda: dict.fromkeys(CHECKS, (None, "not reached"))
    )

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self.results[name] = (ok, detail)

    def all_ok(self) -> bool:
        return all(ok for ok, _ in self.results.values())

    def lines(self) -> list[str]:
        lines = []
        for name, (ok, detail) in self.results.items():
            if name == "order" and ok:
                lines.append(f"SUMMARY order: {detail}")
                continue
            answer = "yes" if ok else "no"
            lines.append(f"SUMMARY {name}: {answer}" + (f" ({detail})" if detail else ""))
        return lines


class Walkthrough:
    """The demo's steps against a started stack; each fills in its check or raises DemoError."""

    def __init__(
        self, stack: LocalStack, out: Output, checks: Checks, namespace: str, timeout: float
    ) -> None:
        self.stack = stack
        self.out = out
        self.checks = checks
        self.ns = namespace
        self.timeout = timeout
        self.watcher: Watcher | None = None
        self.story = Narrator(out)

    def kubectl(self, *argv: str, show: bool = True, expect_ok: bool = True) -> tuple[int, str, str]:
        done = self.stack.kubectl(*argv, check=False, timeout=self.timeout)
        if show:
            self.out.command(list(argv), done.stdout, done.stderr)
        if expect_ok and done.returncode != 0:
            raise DemoError(
                f"`kubectl {' '.join(map(_shown, argv))}` exited {done.returncode}: {done.stderr.strip()}"
            )
        return done.returncode, done.stdout, done.stderr

    def wait(self, done: Callable[[], bool], what: str) -> None:
        """Print what the watch shows until ``done()``; DemoError after the step's timeout."""
        assert self.watcher is not None
        deadline = time.monotonic() + self.timeout
        while True:
            for seen in self.watcher.take(timeout=0.0):
                self.story.feed(seen)
            if done():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(
                    f"timed out after {self.timeout:g} s waiting for {what} (last seen: {self.story.state()})"
                )
            for seen in self.watcher.take(timeout=min(left, 1.0)):
                self.story.feed(seen)

    def run(self) -> None:
        self.out.step(f"Creating the namespace {self.ns} for the walkthrough")
        self.kubectl("create", "namespace", self.ns)
        self.watcher = Watcher(self.stack.kubeconfig, self.ns)
        self.watcher.start(self.timeout)
        self.runtimes()
        self.bad_group()
        self.good_group()
        self.lose_a_sandbox()
        self.delete_group()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def runtimes(self) -> None:
        self.out.step(
            "Applying the runtimes: AgentRuntimes planner-rt and reviewer-rt, CodeInterpreter py-interp "
            "(agentcube's kinds; AgentGroups point at them)"
        )
        self.kubectl("apply", "-n", self.ns, "-f", str(RUNTIMES))

    def bad_group(self) -> None:
        self.out.step(
            "Applying a bad group: a dependency cycle, an edge to an agent that does not exist and a "
            "runtime that does not exist. The CRD schema accepts it; the webhook refuses it, naming "
            "every violation with its reason code in one answer:"
        )
        code, _, err = self.kubectl("apply", "-n", self.ns, "-f", str(BAD_GROUP), expect_ok=False)
        reasons = list(dict.fromkeys(m["reason"] for m in map(_REASON_LINE.match, err.splitlines()) if m))
        _, stored, _ = self.kubectl(
            "get", "agentgroup", BAD_NAME, "-n", self.ns, "--ignore-not-found", "-o", "name", show=False
        )
        ok = code != 0 and bool(reasons) and not stored.strip()
        detail = f"reasons: {', '.join(reasons)}" if reasons else f"kubectl exited {code}: {err.strip()}"
        if stored.strip():
            detail += f"; but {BAD_NAME} was stored"
        self.checks.set("bad-group-rejected", ok, detail)
        if ok:
            self.out.say(f"    -> refused at once, nothing stored ({detail})")
        else:
            self.out.say(f"    -> NOT refused as expected ({detail})")

    def good_group(self) -> None:
        self.out.step(
            "Applying the good group research-task: planner -> coder (2 replicas) -> reviewer, "
            "failurePolicy RetrySubAgent. Each agent starts once the agents it depends on are Ready; "
            "the simulator makes each Sandbox Ready a moment after it appears. As it happens:"
        )
        self.out.mark()
        started = time.monotonic()
        self.kubectl("apply", "-n", self.ns, "-f", str(GOOD_GROUP))
        try:
            self.wait(self.story.running, f"{GROUP} to be Running")
        except DemoError as exc:
            self.checks.set("good-group-running", False, str(exc))
            raise
        took = time.monotonic() - started
        status = (self.story.group or {}).get("status") or {}
        phases = " -> ".join(self.story.phases)
        self.checks.set(
            "good-group-running",
            True,
            f"{status.get('readyAgents')}/{status.get('totalAgents')} Sandboxes Ready in {took:.1f} s; "
            f"phases seen: {phases}",
        )
        wrong = self.story.order_violations()
        order = " < ".join(self.story.order())
        if wrong:
            self.checks.set("order", False, f"{order}: {'; '.join(wrong)}")
        else:
            self.checks.set("order", True, order)
        self.out.say()
        self.kubectl("get", "agentgroups", "-n", self.ns)
        self.kubectl("get", "sandboxes", "-n", self.ns, "-L", AGENT_LABEL)

    def lose_a_sandbox(self) -> None:
        self.out.step(
            f"Deleting the Sandbox {LOST_SANDBOX}, as if its pod had died. Under RetrySubAgent the "
            "controller recreates it and the group recovers:"
        )
        lost = self.story.sandboxes.get(LOST_SANDBOX)
        if lost is None:
            raise DemoError(f"the Sandbox {LOST_SANDBOX} does not exist")
        old_uid = lost["metadata"]["uid"]
        self.story.degraded_seen = False
        self.out.mark()
        started = time.monotonic()
        self.kubectl("delete", "sandbox", LOST_SANDBOX, "-n", self.ns)

        def recovered() -> bool:
            new = self.story.sandboxes.get(LOST_SANDBOX)
            degraded = _condition(self.story.group or {}, "Degraded").get("status")
            return (
                new is not None
                and new["metadata"]["uid"] != old_uid
                and _ready(new)
                and self.story.running()
                and degraded == "False"
            )

        try:
            self.wait(recovered, f"{LOST_SANDBOX} to be recreated and {GROUP} to recover")
        except DemoError as exc:
            self.checks.set("recovered-after-sandbox-delete", False, str(exc))
            raise
        took = time.monotonic() - started
        seen = "; Degraded while it was missing" if self.story.degraded_seen else ""
        self.checks.set(
            "recovered-after-sandbox-delete",
            True,
            f"{LOST_SANDBOX} recreated with a new uid and Ready again, group Running in {took:.1f} s{seen}",
        )
        self.out.say()
        _, described, _ = self.kubectl("describe", "agentgroup", GROUP, "-n", self.ns, show=False)
        events = described[described.find("Events:") :] if "Events:" in described else described
        self.out.command(["describe", "agentgroup", GROUP, "-n", self.ns], events, note="its events")

    def delete_group(self) -> None:
        self.out.step(
            "Deleting the group. Its Sandboxes carry an owner reference to it, so Kubernetes' garbage "
            "collector deletes them (no finalizer involved):"
        )
        count = len(self.story.sandboxes)
        self.out.mark()
        started = time.monotonic()
        self.kubectl("delete", "agentgroup", GROUP, "-n", self.ns)
        try:
            self.wait(
                lambda: self.story.group is None and not self.story.sandboxes,
                f"the Sandboxes of {GROUP} to be deleted",
            )
        except DemoError as exc:
            self.checks.set("sandboxes-removed-with-group", False, str(exc))
            raise
        took = time.monotonic() - started
        self.checks.set("sandboxes-removed-with-group", True, f"{count} Sandboxes deleted in {took:.1f} s")
        self.kubectl("get", "sandboxes", "-n", self.ns)


def _alive(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (a zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _stop_everything(stack: LocalStack, walk: Walkthrough | None, keep: bool, out: Output) -> list[int]:
    """Stop the watcher and every process (signals ignored meanwhile); the PIDs still alive after."""
    with _signals(signal.SIG_IGN):
        if walk is not None:
            walk.stop()
        stack.stop(keep=keep)
    if stack.started_pids:
        stopped = ", ".join(f"{n} (PID {p})" for n, p in reversed(stack.started_pids.items()))
        out.say(f"    stopped {stopped}")
    return [p for p in stack.started_pids.values() if _alive(p)]


def _demo(args: argparse.Namespace, out: Output) -> int:
    from agentgroup.devcluster import ControlPlaneError
    from agentgroup.stack import LocalStack, StackError

    started = time.monotonic()
    out.say("agentgroup demo: the AgentGroup webhook and controller on a local control plane.")
    out.say("Everything runs as local processes on 127.0.0.1 and is stopped at the end (Ctrl-C works too).")
    stack = LocalStack(say=out.say, ready_after=args.ready_after, controller_args=CONTROLLER_ARGS)
    checks = Checks()
    walk: Walkthrough | None = None
    failure = ""
    code = 0
    with _signals(_raise_interrupted):
        try:
            stack.start()
            walk = Walkthrough(stack, out, checks, args.namespace, args.timeout)
            walk.run()
        except Interrupted as exc:
            failure, code = f"interrupted by {exc}", 128 + exc.signum
        except (DemoError, StackError, ControlPlaneError) as exc:
            failure, code = str(exc), 1
        except Exception as exc:
            failure, code = f"unexpected error: {type(exc).__name__}: {exc}", 1
        # The logs are kept when something failed, not when the user stopped the demo.
        keep = code == 1 or args.keep
        out.step("Stopping everything the demo started")
        left = _stop_everything(stack, walk, keep, out)
    pids = " ".join(str(p) for p in stack.started_pids.values())
    if left:
        checks.set("stopped-everything", False, f"still running: {' '.join(map(str, left))}")
    else:
        checks.set("stopped-everything", True, f"{len(stack.started_pids)} processes stopped")
    folder = stack.folder

    out.step(f"Summary (the demo took {time.monotonic() - started:.0f} s)")
    for line in checks.lines():
        out.say(line)
    out.say(f"SUMMARY pids: {pids}")
    if folder is not None:
        out.say(f"SUMMARY folder: {folder} ({'kept' if folder.exists() else 'removed'})")
    if code > 1:
        out.say(f"\nagentgroup demo: {failure}; everything it started is stopped")
        return code
    if failure:
        out.say(f"\nagentgroup demo: FAILED: {failure}")
        if folder is not None and folder.exists() and stack.log_paths():
            out.say("The logs of every process are kept:")
            for name, path in stack.log_paths().items():
                out.say(f"  {name:<24} {path}")
        return 1
    if not checks.all_ok():
        failed = ", ".join(n for n, (ok, _) in checks.results.items() if not ok)
        out.say(f"\nagentgroup demo: FAILED: these checks do not hold: {failed}")
        return 1
    out.say("\nagentgroup demo: every check holds.")
    return 0


# ------------------------------------------------------------------------------------------ dev mode


def _dev(args: argparse.Namespace, out: Output) -> int:
    from agentgroup.devcluster import ControlPlaneError
    from agentgroup.stack import LocalStack, StackError

    out.say("agentgroup demo --dev: the local environment, left running for you to try AgentGroups.")
    stack = LocalStack(say=out.say, ready_after=args.ready_after, controller_args=CONTROLLER_ARGS)
    code = 0
    failure = ""
    with _signals(_raise_interrupted):
        try:
            stack.start()
            out.step("Applying the example runtimes into the namespace default")
            done = stack.kubectl("apply", "-f", str(RUNTIMES), check=False)
            out.command(["apply", "-f", str(RUNTIMES)], done.stdout, done.stderr)
            if done.returncode != 0:
                raise DemoError(f"applying {_shown(str(RUNTIMES))} failed")
            _dev_banner(stack, out)
            while True:
                dead = stack.dead_children()
                if dead:
                    raise dead[0].failure("stopped unexpectedly")
                _wait_quietly(1.0)
        except Interrupted as exc:
            out.say(f"\nagentgroup demo --dev: {exc} received, stopping everything")
        except (DemoError, StackError, ControlPlaneError) as exc:
            failure, code = str(exc), 1
        except Exception as exc:
            failure, code = f"unexpected error: {type(exc).__name__}: {exc}", 1
        left = _stop_everything(stack, None, bool(failure) or args.keep, out)
    if failure:
        out.say(f"agentgroup demo --dev: FAILED: {failure}")
    if left:
        out.say(f"agentgroup demo --dev: still running after stop: {' '.join(map(str, left))}")
        return 1
    out.say(f"agentgroup demo --dev: stopped {len(stack.started_pids)} processes")
    return code


def _wait_quietly(seconds: float) -> None:
    """Block for up to ``seconds``; a signal handler's exception ends it at once."""
    threading.Event().wait(seconds)


def _dev_banner(stack: LocalStack, out: Output) -> None:
    kubectl = stack.control_plane.kubectl_path
    on_path = shutil.which("kubectl") == str(kubectl)
    out.step("The environment is running. From another shell:")
    out.say(f"export KUBECONFIG={stack.kubeconfig}")
    if not on_path:
        out.say(f"export PATH={kubectl.parent}:$PATH    # the venv's kubectl")
    out.say("    kubectl apply -f examples/good/02-group.yaml     # runtimes are in default already")
    out.say("    kubectl get agentgroups -w")
    out.say("    kubectl get sandboxes -L runtime.agentcube.io/agent-name")
    out.say("    kubectl apply -f examples/bad/DependencyCycle.yaml   # refused by the webhook")
    out.say("    kubectl describe agentgroup research-task")
    out.say("Logs:")
    for name, path in stack.log_paths().items():
        out.say(f"    {name:<24} {path}")
    out.say("processes: " + " ".join(f"{n}={p}" for n, p in stack.started_pids.items()))
    out.say("Press Ctrl-C to stop everything.")
