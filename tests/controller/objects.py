"""Objects for planner and controller tests, and :class:`World`: plans applied the way the controller would.

A World holds one group, its runtimes and the objects plans created, with a clock the test moves.
The test plays agent-sandbox (marking Sandboxes Ready, losing them) and calls :meth:`World.step`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.models import API_VERSION, KIND, AgentGroup, AgentRuntime, CodeInterpreter, Runtime, Sandbox
from shared.planner import Plan, PlanConfig, plan
from shared.rules import RuntimeKey
from shared.sandboxes import CLAIM_KIND, SandboxClaim, rfc3339
from shared.status import Change, change, to_json

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
NS = "team-a"
GROUP_UID = "uid-group"

Agent = tuple[str, str, str, int]
"""(name, runtime kind, runtime name, replicas)"""


def agent(name: str, runtime: str = "py", *, kind: str = "CodeInterpreter", replicas: int = 1) -> Agent:
    return (name, kind, runtime, replicas)


def group_obj(
    agents: Sequence[Agent],
    edges: Iterable[tuple[str, str]] = (),
    *,
    name: str = "g",
    policy: str | None = None,
    topology: str | None = None,
    uid: str = GROUP_UID,
    generation: int = 1,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "agents": [
            {"name": n, "replicas": r, "runtimeRef": {"kind": k, "name": rt}} for n, k, rt, r in agents
        ],
        "dependencies": [{"from": a, "to": b} for a, b in edges],
    }
    if policy:
        spec["failurePolicy"] = policy
    if topology:
        spec["topology"] = topology
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": NS, "uid": uid, "generation": generation},
        "spec": spec,
    }


def code_interpreter(
    name: str = "py", *, warm: int = 0, max_session: str | None = "8h", **template: Any
) -> CodeInterpreter:
    spec: dict[str, Any] = {"template": {"image": "python:3.12", **template}, "warmPoolSize": warm}
    if max_session is not None:
        spec["maxSessionDuration"] = max_session
    return CodeInterpreter.model_validate({"metadata": {"name": name, "namespace": NS}, "spec": spec})


def agent_runtime(name: str = "rt", pod_spec: dict[str, Any] | None = None, **template: Any) -> AgentRuntime:
    pod = {"spec": pod_spec or {"containers": [{"name": "main", "image": "agent:1"}]}, **template}
    return AgentRuntime.model_validate(
        {
            "metadata": {"name": name, "namespace": NS},
            "spec": {"podTemplate": pod, "maxSessionDuration": "1h"},
        }
    )


def runtime_map(*runtimes: Runtime) -> dict[RuntimeKey, Runtime]:
    return {(r.kind, r.metadata.name): r for r in runtimes}


def ready_condition(ready: bool, at: datetime) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "DependenciesReady" if ready else "DependenciesNotReady",
        "message": "",
        "lastTransitionTime": rfc3339(at),
    }


class World:
    """One group and everything its plans made, in memory; ``now`` moves only when the test says so."""

    def __init__(
        self,
        group: dict[str, Any],
        runtimes: Iterable[Runtime] = (),
        *,
        config: PlanConfig | None = None,
    ) -> None:
        self.group = copy.deepcopy(group)
        self.runtimes = runtime_map(*runtimes)
        self.config = config or PlanConfig()
        self.now = T0
        self.sandboxes: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        self.status_changes: list[Change] = []
        self.events: list[tuple[str, str, str]] = []
        self._uids = itertools.count(1)

    # --- reading --------------------------------------------------------------------------------

    @property
    def typed(self) -> AgentGroup:
        return AgentGroup.model_validate(self.group)

    @property
    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.group.get("status", {})
        return result

    @property
    def phase(self) -> str:
        return str(self.status.get("phase", ""))

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    def agent(self, name: str) -> dict[str, Any]:
        return next(a for a in self.status["agents"] if a["name"] == name)

    # --- the controller's part ------------------------------------------------------------------

    def plan(self) -> Plan:
        return plan(
            self.typed,
            self.runtimes,
            [Sandbox.model_validate(s) for s in self.sandboxes.values()],
            self.now,
            claims=[SandboxClaim.model_validate(c) for c in self.claims.values()],
            config=self.config,
        )

    def apply(self, p: Plan) -> None:
        for d in p.deletes:
            store = self.claims if d.kind == CLAIM_KIND else self.sandboxes
            if d.name in store and store[d.name]["metadata"]["uid"] == d.uid:
                del store[d.name]
        for c in p.creates:
            body = copy.deepcopy(c.body)
            store = self.claims if body["kind"] == CLAIM_KIND else self.sandboxes
            name = body["metadata"]["name"]
            assert name not in store, f"the plan created {name} twice"
            body["metadata"].update(uid=f"uid-{next(self._uids)}", creationTimestamp=rfc3339(self.now))
            store[name] = body
            self.created.append(name)
        if p.annotations is not None:
            self.group["metadata"].setdefault("annotations", {}).update(p.annotations)
        kind = change(self.typed.status, p.status)
        if kind is not Change.NONE:
            self.status_changes.append(kind)
            self.group["status"] = to_json(p.status)
        self.events += [(e.type, e.reason, e.message) for e in p.events]
        self.events += [(c.event.type, c.event.reason, c.event.message) for c in p.creates]
        self.events += [(d.event.type, d.event.reason, d.event.message) for d in p.deletes]

    def step(self) -> Plan:
        p = self.plan()
        self.apply(p)
        return p

    # --- agent-sandbox's and the user's part ----------------------------------------------------

    def mark_ready(self, *names: str, ready: bool = True) -> None:
        for name in names or list(self.sandboxes):
            status = self.sandboxes[name].setdefault("status", {})
            status["conditions"] = [ready_condition(ready, self.now)]

    def lose(self, name: str) -> None:
        del self.sandboxes[name]

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def edit_spec(self, **spec: Any) -> None:
        self.group["spec"].update(spec)
        self.group["metadata"]["generation"] += 1

    def run_until_running(self, max_steps: int = 50) -> None:
        """Step, marking every created Sandbox Ready, until the group is Running."""
        for _ in range(max_steps):
            self.step()
            if self.phase == "Running":
                return
            self.mark_ready()
        raise AssertionError(f"not Running after {max_steps} steps: {self.status}")
