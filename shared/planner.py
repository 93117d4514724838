"""The desired state of one AgentGroup, as a pure function of what exists (API.md section 4).

``plan(group, runtimes, sandboxes, now)`` reads the group (with the status last written), its runtimes
and the Sandboxes / SandboxClaims that carry its names or its owner reference, and returns a
:class:`Plan`: the objects to create and delete, the status, the events, and when to look again. The
controller only carries a plan out, so every decision here is tested without a cluster, and running
a plan's result through ``plan`` again asks for nothing more (level-triggered, idempotent).

Restart safety: names are deterministic and bodies are created only when absent; what must survive a
restart (the start of the startup deadline, RetrySubAgent's attempt counts) lives in the group's status
and annotations, never in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from shared.findings import Finding, Reason
from shared.graph import prerequisites, waiting_for
from shared.models import (
    AgentGroup,
    AgentGroupStatus,
    AgentSpec,
    AgentStatus,
    CodeInterpreter,
    Condition,
    FailurePolicy,
    Phase,
    Runtime,
    Sandbox,
)
from shared.naming import sandbox_name
from shared.rules import RuntimeKey, validate_group
from shared.sandboxes import (
    AGENT_LABEL,
    CLAIM_KIND,
    RUNTIME_ANNOTATION,
    SANDBOX_KIND,
    V1ALPHA1,
    SandboxClaim,
    claim_body,
    max_session_duration,
    parse_time,
    rfc3339,
    runtime_ref,
    sandbox_body,
    wants_claim,
)
from shared.status import DEGRADED, PROGRESSING, READY, condition, find

# Ready reasons beyond the admission reason codes.
ACCEPTED = "Accepted"
FLEET_READY = "FleetReady"
AGENT_LOST = "AgentLost"
DEADLINE_EXCEEDED = "DeadlineExceeded"
AS_EXPECTED = "AsExpected"
# A Failed group with one of these reasons stays Failed until its spec changes.
FINAL_REASONS = frozenset({AGENT_LOST, DEADLINE_EXCEEDED})

# Agent phases (status.agents[].phase).
WAITING = "Waiting"
STARTING = "Starting"
AGENT_READY = "Ready"
AGENT_FAILED = "Failed"

RETRIES_ANNOTATION = "runtime.agentcube.io/sandbox-retries"

# How many names a summary lists before it says "and N more".
_LISTED = 5

NORMAL = "Normal"
WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class PlanConfig:
    sandbox_api: str = V1ALPHA1
    claim_api: str | None = V1ALPHA1
    """None: the SandboxClaim API is not served, so warm-path agents get cold Sandboxes."""
    startup_timeout: timedelta = timedelta(minutes=10)
    retry_limit: int = 5
    """RetrySubAgent: how many times one lost Sandbox is recreated before the group fails."""
    retry_base: timedelta = timedelta(seconds=5)
    """RetrySubAgent: the wait before the second recreation, doubled for each further one."""
    retry_cap: timedelta = timedelta(minutes=5)
    unready_grace: timedelta = timedelta(minutes=1)
    """RetrySubAgent: a Sandbox not Ready this long in a Running group is replaced."""


@dataclass(frozen=True, slots=True)
class GroupEvent:
    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Create:
    body: dict[str, Any]
    event: GroupEvent


@dataclass(frozen=True, slots=True)
class Delete:
    api_version: str
    kind: str
    name: str
    uid: str
    """Deletes only this incarnation (a delete precondition)."""
    event: GroupEvent


@dataclass(frozen=True, slots=True)
class Plan:
    status: AgentGroupStatus
    creates: tuple[Create, ...] = ()
    deletes: tuple[Delete, ...] = ()
    annotations: Mapping[str, str] | None = None
    """A merge patch of the group's annotations, when they must change."""
    events: tuple[GroupEvent, ...] = ()
    requeue_after: timedelta | None = None


def sandbox_names(group: AgentGroup) -> list[str]:
    """Every Sandbox (or claim) name the group's spec asks for."""
    return [
        sandbox_name(group.metadata.name, agent.name, i)
        for agent in group.spec.agents
        for i in range(max(agent.replicas, 0))
    ]


# --- what exists ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unit:
    """An observed Sandbox or SandboxClaim at one of the names the planner cares about."""

    kind: str
    api_version: str
    name: str
    uid: str
    ours: bool
    terminating: bool
    ready: bool
    unready_since: datetime | None
    runtime: str
    agent: str
    sandbox: str
    """The Sandbox that does the work: the object itself, or the one a claim was given."""


def _controller_uid(refs: Sequence[Mapping[str, Any]]) -> str:
    return next((str(r.get("uid", "")) for r in refs if r.get("controller")), "")


def _unready_since(conditions: Sequence[Condition], created: str | None) -> datetime | None:
    ready = find(conditions, "Ready")
    if ready is not None and ready.status != "True" and ready.last_transition_time:
        return parse_time(ready.last_transition_time)
    return parse_time(created)


def _unit(
    kind: str, obj: Sandbox | SandboxClaim, group_uid: str, health: Sandbox | SandboxClaim, sandbox: str
) -> _Unit:
    meta = obj.metadata
    return _Unit(
        kind=kind,
        api_version=obj.api_version,
        name=meta.name,
        uid=meta.uid,
        ours=_controller_uid(meta.owner_references) == group_uid,
        terminating=meta.deletion_timestamp is not None,
        ready=health.ready,
        unready_since=_unready_since(health.status.conditions, meta.creation_timestamp),
        runtime=meta.annotations.get(RUNTIME_ANNOTATION, ""),
        agent=meta.labels.get(AGENT_LABEL, ""),
        sandbox=sandbox,
    )


def _observe(
    group: AgentGroup, sandboxes: Sequence[Sandbox], claims: Sequence[SandboxClaim]
) -> dict[tuple[str, str], _Unit]:
    uid = group.metadata.uid
    by_name = {s.metadata.name: s for s in sandboxes}
    units = {
        (SANDBOX_KIND, s.metadata.name): _unit(SANDBOX_KIND, s, uid, s, s.metadata.name) for s in sandboxes
    }
    for c in claims:
        given = c.status.sandbox.sandbox_name
        units[CLAIM_KIND, c.metadata.name] = _unit(CLAIM_KIND, c, uid, by_name.get(given) or c, given)
    return units


class _State(Enum):
    ABSENT = "absent"
    CONFLICT = "conflict"  # the name is taken by an object this group does not control
    BLOCKED = "blocked"  # ours, but on its way out (terminating, or being replaced)
    STARTING = "starting"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class _Slot:
    agent: AgentSpec
    name: str
    kind: str
    state: _State
    unit: _Unit | None


def _kind_for(runtime: Runtime | None, config: PlanConfig) -> str:
    if runtime is not None and wants_claim(runtime) and config.claim_api is not None:
        return CLAIM_KIND
    return SANDBOX_KIND


@dataclass
class _Draft:
    """What a plan accumulates before it becomes a :class:`Plan`."""

    creates: list[Create] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    events: list[GroupEvent] = field(default_factory=list)
    wake: list[datetime] = field(default_factory=list)
    agent_notes: dict[str, list[str]] = field(default_factory=dict)

    def note(self, agent: str, text: str) -> None:
        self.agent_notes.setdefault(agent, []).append(text)

    def delete(self, unit: _Unit, event: GroupEvent) -> None:
        self.deletes.append(Delete(unit.api_version, unit.kind, unit.name, unit.uid, event))


def _slots(
    group: AgentGroup,
    runtimes: Mapping[RuntimeKey, Runtime],
    units: Mapping[tuple[str, str], _Unit],
    config: PlanConfig,
    draft: _Draft,
) -> dict[str, list[_Slot]]:
    """Each agent's replicas and their state; plans the deletion of stale and unwanted objects."""
    slots: dict[str, list[_Slot]] = {}
    wanted: set[tuple[str, str]] = set()
    for agent in group.spec.agents:
        ref = agent.runtime_ref
        kind = _kind_for(runtimes.get((ref.kind, ref.name)), config)
        other = SANDBOX_KIND if kind == CLAIM_KIND else CLAIM_KIND
        want_ref = runtime_ref(agent)
        agent_slots = []
        for i in range(max(agent.replicas, 0)):
            name = sandbox_name(group.metadata.name, agent.name, i)
            wanted.add((kind, name))
            unit = units.get((kind, name))
            leftover = units.get((other, name))
            state = _State.ABSENT
            if leftover is not None and leftover.ours:
                state = _State.BLOCKED  # the agent switched between the cold and the warm path
            if unit is None:
                pass
            elif not unit.ours:
                state = _State.CONFLICT
                text = (
                    f'{kind} "{name}" already exists and does not belong to this group; delete or rename it'
                )
                draft.note(agent.name, text)
                draft.events.append(GroupEvent(WARNING, "SandboxConflict", text))
            elif unit.terminating:
                state = _State.BLOCKED
                draft.note(agent.name, f'waiting for the old {kind} "{name}" to be deleted')
            elif unit.runtime != want_ref:
                state = _State.BLOCKED
                draft.delete(
                    unit,
                    GroupEvent(
                        NORMAL,
                        "SandboxReplaced",
                        f'Deleting {kind} "{name}" of agent {agent.name}: made from {unit.runtime or "?"}, '
                        f"the agent now runs {want_ref}",
                    ),
                )
            elif state is _State.ABSENT:
                state = _State.READY if unit.ready else _State.STARTING
            agent_slots.append(_Slot(agent, name, kind, state, unit))
        slots[agent.name] = agent_slots
    for (kind, name), unit in units.items():
        if unit.ours and not unit.terminating and (kind, name) not in wanted:
            why = _unwanted_reason(group, unit)
            draft.delete(unit, GroupEvent(NORMAL, "SandboxDeleted", f'Deleting {kind} "{name}": {why}'))
    return slots


def _unwanted_reason(group: AgentGroup, unit: _Unit) -> str:
    agent = next((a for a in group.spec.agents if a.name == unit.agent), None)
    if agent is None:
        return f"agent {unit.agent or '(unknown)'} is no longer in the spec"
    if unit.name in {sandbox_name(group.metadata.name, agent.name, i) for i in range(agent.replicas)}:
        return f"agent {agent.name} switched between a cold Sandbox and a warm-pool SandboxClaim"
    return f"agent {agent.name} now has {agent.replicas} replicas"


# --- retries (RetrySubAgent) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Attempts:
    count: int
    at: datetime


def _read_retries(group: AgentGroup) -> dict[str, _Attempts]:
    """The recreations done in this generation; anything unreadable or older counts as none."""
    raw = group.metadata.annotations.get(RETRIES_ANNOTATION)
    try:
        doc = json.loads(raw) if raw else {}
        if not isinstance(doc, dict) or doc.get("generation") != group.metadata.generation:
            return {}
        out = {}
        for name, (count, at) in (doc.get("sandboxes") or {}).items():
            moment = parse_time(at)
            if isinstance(count, int) and moment is not None:
                out[str(name)] = _Attempts(count, moment)
        return out
    except (ValueError, TypeError, AttributeError):
        return {}


def _write_retries(group: AgentGroup, retries: Mapping[str, _Attempts]) -> dict[str, str]:
    doc = {
        "generation": group.metadata.generation,
        "sandboxes": {n: [a.count, rfc3339(a.at)] for n, a in sorted(retries.items())},
    }
    return {RETRIES_ANNOTATION: json.dumps(doc, separators=(",", ":"))}


def _retry_delay(count: int, config: PlanConfig) -> timedelta:
    """The wait after ``count`` recreations: none for the first, then base, 2*base, ... up to the cap."""
    if count <= 0:
        return timedelta(0)
    factor: int = 2 ** min(count - 1, 30)
    return min(config.retry_cap, config.retry_base * factor)


# --- building the status ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    phase: Phase
    reason: str
    message: str
    degraded: str = ""
    """Why the group is Degraded; empty when it is not."""
    failed_agents: frozenset[str] = frozenset()


def _ready_count(slots: Sequence[_Slot]) -> int:
    return sum(s.state is _State.READY for s in slots)


def _agent_status(
    agent: AgentSpec,
    slots: Sequence[_Slot],
    after: Mapping[str, str | None],
    waits: Sequence[str],
    failed: bool,
    notes: Sequence[str],
) -> AgentStatus:
    """``after`` maps each slot to the Sandbox it has once the plan is carried out ("" for a claim not
    given one yet, None for nothing), so a plan's own creates do not change the status next time."""
    ready = _ready_count(slots)
    present = [after[s.name] for s in slots if after[s.name] is not None]
    waiting = list(waits) if len(present) < len(slots) else []
    if failed:
        phase = AGENT_FAILED
    elif ready == len(slots):
        phase = AGENT_READY
    elif waiting and not present:
        phase = WAITING
    else:
        phase = STARTING
    parts = list(notes)
    if waiting:
        parts.append(f"waiting for {', '.join(waiting)} to be Ready")
    if phase != AGENT_READY:
        parts.append(f"{ready} of {len(slots)} Sandboxes Ready")
    return AgentStatus(
        name=agent.name,
        phase=phase,
        sandboxNames=tuple(name for name in present if name),
        readyReplicas=ready,
        message="; ".join(parts),
        waitingFor=tuple(waiting),
    )


def _after(slots: Sequence[_Slot], draft: _Draft) -> dict[str, str | None]:
    created = {c.body["metadata"]["name"]: c.body["kind"] for c in draft.creates}
    deleted = {(d.kind, d.name) for d in draft.deletes}
    out: dict[str, str | None] = {}
    for slot in slots:
        unit = slot.unit
        if slot.name in created:
            out[slot.name] = slot.name if created[slot.name] == SANDBOX_KIND else ""
        elif unit is None or not unit.ours or (unit.kind, unit.name) in deleted:
            out[slot.name] = None
        else:
            out[slot.name] = unit.sandbox
    return out


def _status(
    group: AgentGroup,
    outcome: _Outcome,
    agents: Sequence[AgentStatus],
    ready: int,
    now: datetime,
) -> AgentGroupStatus:
    old = group.status
    gen = group.metadata.generation
    running = outcome.phase is Phase.RUNNING
    fully_ready = running and not outcome.degraded
    progressing = outcome.phase in (Phase.PENDING, Phase.INITIALIZING)
    conditions = (
        condition(
            old.conditions, READY, fully_ready, outcome.reason, outcome.message, generation=gen, now=now
        ),
        condition(
            old.conditions,
            PROGRESSING,
            progressing,
            outcome.phase.value if progressing else outcome.reason,
            outcome.message if progressing else "",
            generation=gen,
            now=now,
        ),
        condition(
            old.conditions,
            DEGRADED,
            bool(outcome.degraded),
            AGENT_LOST if outcome.degraded else AS_EXPECTED,
            outcome.degraded,
            generation=gen,
            now=now,
        ),
    )
    start = old.start_time
    if start is None and outcome.phase is not Phase.FAILED:
        start = rfc3339(now)
    return AgentGroupStatus(
        phase=outcome.phase.value,
        observedGeneration=gen,
        totalAgents=sum(max(a.replicas, 0) for a in group.spec.agents),
        readyAgents=ready,
        startTime=start,
        agents=tuple(agents),
        conditions=conditions,
    )


def _transition_events(group: AgentGroup, status: AgentGroupStatus) -> list[GroupEvent]:
    """One event per phase change, and when the group becomes or stops being Degraded."""
    old = group.status
    events = []
    ready = find(status.conditions, READY)
    message = ready.message if ready is not None else ""
    new_gen = old.observed_generation != status.observed_generation
    if status.phase != old.phase or (new_gen and status.phase == Phase.FAILED):
        if status.phase == Phase.FAILED:
            reason = ready.reason if ready is not None else Phase.FAILED.value
            events.append(GroupEvent(WARNING, reason, message))
        else:
            events.append(GroupEvent(NORMAL, status.phase, message))
    was = find(old.conditions, DEGRADED)
    now_degraded = find(status.conditions, DEGRADED)
    was_true = was is not None and was.status == "True"
    is_true = now_degraded is not None and now_degraded.status == "True"
    if status.phase != Phase.RUNNING:
        return events  # a failure says it all
    if is_true and not was_true and now_degraded is not None:
        events.append(GroupEvent(WARNING, "Degraded", now_degraded.message))
    elif was_true and not is_true:
        events.append(GroupEvent(NORMAL, "Recovered", "every Sandbox is Ready again"))
    return events


def _summary(total: int, ready: int, waiting: Mapping[str, Sequence[str]]) -> str:
    blocked = [a for a, w in waiting.items() if w]
    text = f"{ready} of {total} Sandboxes Ready"
    if not blocked:
        return text
    shown = ", ".join(blocked[:_LISTED])
    more = f" and {len(blocked) - _LISTED} more" if len(blocked) > _LISTED else ""
    return f"{text}; waiting to start: {shown}{more}"


def _lost_text(slot: _Slot, recreated: Collection[str] = ()) -> str:
    """What happened to a slot, as it stands once the plan is carried out."""
    what = f'Sandbox "{slot.name}" of agent {slot.agent.name}'
    if slot.state is _State.STARTING or slot.name in recreated:
        return f"{what} is not Ready"
    return f"{what} is gone"


# --- the plan ---------------------------------------------------------------------------------------


_AGENT_FIELD = re.compile(r"^spec\.agents\[(\d+)\]")


def _agent_of(group: AgentGroup, finding: Finding) -> str:
    """The name of the agent a ``spec.agents[i]...`` finding is about."""
    match = _AGENT_FIELD.match(finding.field)
    return group.spec.agents[int(match.group(1))].name if match else ""


def _invalid(group: AgentGroup, violations: Sequence[Finding], now: datetime) -> Plan:
    """Failed with the spec's violations; nothing is created or deleted for a spec we cannot trust."""
    wrong = [v for v in violations if v.reason != Reason.RUNTIME_NOT_FOUND]
    topology = all(v.reason == Reason.UNSUPPORTED_TOPOLOGY for v in wrong)
    reason = Reason.UNSUPPORTED_TOPOLOGY if topology else Reason.INVALID_SPEC
    outcome = _Outcome(Phase.FAILED, reason.value, "; ".join(str(v) for v in violations))
    status = _status(group, outcome, (), 0, now)
    return Plan(status=status, events=tuple(_transition_events(group, status)))


def plan(
    group: AgentGroup,
    runtimes: Mapping[RuntimeKey, Runtime],
    sandboxes: Sequence[Sandbox],
    now: datetime,
    *,
    claims: Sequence[SandboxClaim] = (),
    config: PlanConfig = PlanConfig(),
) -> Plan:
    """What should exist for ``group`` and what its status is, given what exists at ``now``.

    ``sandboxes`` and ``claims`` are those carrying the group's names or its owner reference, plus the
    Sandboxes its claims were given; anything else is ignored.
    """
    violations = validate_group(group, runtimes=set(runtimes)).violations
    if any(v.reason != Reason.RUNTIME_NOT_FOUND for v in violations):
        return _invalid(group, violations, now)

    draft = _Draft()
    slots = _slots(group, runtimes, _observe(group, sandboxes, claims), config, draft)
    pre = prerequisites(
        [a.name for a in group.spec.agents], [(d.from_, d.to) for d in group.spec.dependencies]
    )
    ready_agents = {name for name, s in slots.items() if all(x.state is _State.READY for x in s)}
    waits = waiting_for(pre, ready_agents)
    total = sum(len(s) for s in slots.values())
    ready = sum(_ready_count(s) for s in slots.values())
    retries = _read_retries(group)
    new_retries: dict[str, _Attempts] | None = None

    old = group.status
    same_gen = old.observed_generation == group.metadata.generation
    old_ready = find(old.conditions, READY)
    all_slots = [s for agent_slots in slots.values() for s in agent_slots]
    not_ready = [s for s in all_slots if s.state is not _State.READY]

    if violations:  # only RuntimeNotFound is left
        text = "; ".join(str(v) for v in violations)
        missing = frozenset(_agent_of(group, v) for v in violations)
        outcome = _Outcome(Phase.FAILED, Reason.RUNTIME_NOT_FOUND.value, text, failed_agents=missing)
        for v in violations:
            draft.note(_agent_of(group, v), v.message)
    elif (
        same_gen and old.phase == Phase.FAILED and old_ready is not None and old_ready.reason in FINAL_REASONS
    ):
        lost = frozenset(s.agent.name for s in not_ready)
        degraded = find(old.conditions, DEGRADED)
        was_degraded = degraded.message if degraded is not None and degraded.status == "True" else ""
        outcome = _Outcome(
            Phase.FAILED, old_ready.reason, old_ready.message, degraded=was_degraded, failed_agents=lost
        )
    elif not not_ready:
        outcome = _Outcome(Phase.RUNNING, FLEET_READY, f"all {total} Sandboxes are Ready")
    elif same_gen and old.phase == Phase.RUNNING:
        outcome, new_retries = _after_loss(group, runtimes, not_ready, waits, retries, now, config, draft)
    else:
        outcome = _initializing(group, runtimes, all_slots, waits, total, ready, now, config, draft)

    if outcome.phase is Phase.FAILED:  # final for this generation: touch nothing
        draft.creates.clear()
        draft.deletes.clear()
    after = _after(all_slots, draft)
    agents = [
        _agent_status(
            agent,
            slots[agent.name],
            after,
            waits[agent.name],
            agent.name in outcome.failed_agents,
            draft.agent_notes.get(agent.name, ()),
        )
        for agent in group.spec.agents
    ]
    status = _status(group, outcome, agents, ready, now)
    events = [*_transition_events(group, status), *draft.events]
    if outcome.phase is Phase.FAILED:
        return Plan(status=status, events=tuple(events))
    wake = min(draft.wake, default=None)
    return Plan(
        status=status,
        creates=tuple(draft.creates),
        deletes=tuple(draft.deletes),
        annotations=_write_retries(group, new_retries) if new_retries is not None else None,
        events=tuple(events),
        requeue_after=max(wake - now, timedelta(0)) if wake is not None else None,
    )


def _body(
    group: AgentGroup, slot: _Slot, runtime: Runtime, now: datetime, config: PlanConfig
) -> dict[str, Any]:
    if slot.kind == CLAIM_KIND and isinstance(runtime, CodeInterpreter) and config.claim_api is not None:
        return claim_body(group, slot.agent, slot.name, runtime, api_version=config.claim_api)
    return sandbox_body(group, slot.agent, slot.name, runtime, api_version=config.sandbox_api, now=now)


def _runtime(runtimes: Mapping[RuntimeKey, Runtime], agent: AgentSpec) -> Runtime:
    return runtimes[agent.runtime_ref.kind, agent.runtime_ref.name]


def _note_duration(runtime: Runtime, agent: AgentSpec, draft: _Draft) -> None:
    try:
        max_session_duration(runtime)
    except ValueError as exc:
        draft.note(agent.name, f"maxSessionDuration ignored: {exc}")


def _initializing(
    group: AgentGroup,
    runtimes: Mapping[RuntimeKey, Runtime],
    all_slots: Sequence[_Slot],
    waits: Mapping[str, Sequence[str]],
    total: int,
    ready: int,
    now: datetime,
    config: PlanConfig,
    draft: _Draft,
) -> _Outcome:
    """Starting up: create what may start, in dependency order, within the startup deadline."""
    progressing = find(group.status.conditions, PROGRESSING)
    since = now
    if progressing is not None and progressing.status == "True":
        since = parse_time(progressing.last_transition_time) or now
    deadline = since + config.startup_timeout
    summary = _summary(total, ready, waits)
    if now >= deadline:
        late = frozenset(s.agent.name for s in all_slots if s.state is not _State.READY)
        message = f"not Running within {config.startup_timeout} of starting: {summary}"
        return _Outcome(Phase.FAILED, DEADLINE_EXCEEDED, message, failed_agents=late)
    draft.wake.append(deadline)
    noted: set[str] = set()
    for slot in all_slots:
        runtime = _runtime(runtimes, slot.agent)
        if slot.agent.name not in noted:
            noted.add(slot.agent.name)
            _note_duration(runtime, slot.agent, draft)
        if slot.state is not _State.ABSENT or waits[slot.agent.name]:
            continue
        draft.creates.append(
            Create(
                _body(group, slot, runtime, now, config),
                GroupEvent(
                    NORMAL,
                    f"{slot.kind}Created",
                    f'Created {slot.kind} "{slot.name}" for agent {slot.agent.name}',
                ),
            )
        )
    started = draft.creates or any(s.unit is not None and s.unit.ours for s in all_slots)
    return _Outcome(Phase.INITIALIZING if started else Phase.PENDING, ACCEPTED, summary)


def _after_loss(
    group: AgentGroup,
    runtimes: Mapping[RuntimeKey, Runtime],
    lost: Sequence[_Slot],
    waits: Mapping[str, Sequence[str]],
    retries: Mapping[str, _Attempts],
    now: datetime,
    config: PlanConfig,
    draft: _Draft,
) -> tuple[_Outcome, dict[str, _Attempts] | None]:
    """A Running group lost Sandboxes (gone or no longer Ready): apply its failure policy."""
    text = "; ".join(_lost_text(s) for s in lost)
    lost_agents = frozenset(s.agent.name for s in lost)
    policy = group.spec.failure_policy
    if policy == FailurePolicy.FAIL_FAST:
        return _Outcome(Phase.FAILED, AGENT_LOST, text, degraded=text, failed_agents=lost_agents), None
    if policy == FailurePolicy.CONTINUE_DEGRADED:
        return _Outcome(Phase.RUNNING, AGENT_LOST, text, degraded=text), None

    updated = dict(retries)
    for slot in lost:
        if slot.state is _State.STARTING and slot.unit is not None:
            since = slot.unit.unready_since or now
            if now - since >= config.unready_grace:
                draft.delete(
                    slot.unit,
                    GroupEvent(
                        WARNING,
                        "SandboxReplaced",
                        f'Deleting Sandbox "{slot.name}" of agent {slot.agent.name}: '
                        f"not Ready for {config.unready_grace}",
                    ),
                )
            else:
                draft.wake.append(since + config.unready_grace)
            continue
        if slot.state is not _State.ABSENT:
            continue
        done = retries.get(slot.name)
        count = done.count if done is not None else 0
        if count >= config.retry_limit:
            message = f"{text}; gave up after recreating {slot.name} {count} times"
            return _Outcome(Phase.FAILED, AGENT_LOST, message, degraded=text, failed_agents=lost_agents), None
        due = done.at + _retry_delay(count, config) if done is not None else now
        if waits[slot.agent.name]:
            continue
        if now < due:
            draft.wake.append(due)
            draft.note(slot.agent.name, f"recreating {slot.name} at {rfc3339(due)}")
            continue
        attempt = count + 1
        updated[slot.name] = _Attempts(attempt, now)
        draft.creates.append(
            Create(
                _body(group, slot, _runtime(runtimes, slot.agent), now, config),
                GroupEvent(
                    NORMAL,
                    "SandboxRecreated",
                    f'Recreated {slot.kind} "{slot.name}" of agent {slot.agent.name} '
                    f"(attempt {attempt} of {config.retry_limit})",
                ),
            )
        )
    recreated = {c.body["metadata"]["name"] for c in draft.creates}
    text = "; ".join(_lost_text(s, recreated) for s in lost)
    outcome = _Outcome(Phase.RUNNING, AGENT_LOST, text, degraded=text)
    return outcome, (updated if updated != retries else None)
