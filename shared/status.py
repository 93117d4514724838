"""Conditions with Kubernetes semantics, and how urgent a change of an AgentGroup's status is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from shared.models import AgentGroupStatus, Condition
from shared.sandboxes import rfc3339

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def condition(
    previous: Sequence[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> Condition:
    """A condition whose ``lastTransitionTime`` moves only when its status changes.

    Reason and message may change under the same transition time (``meta.SetStatusCondition``), so a
    status rewritten with the same facts compares equal to the stored one.
    """
    value = "True" if status else "False"
    old = find(previous, type_)
    since = old.last_transition_time if old is not None and old.status == value else None
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        lastTransitionTime=since or rfc3339(now),
        observedGeneration=generation,
    )


class Change(Enum):
    """How soon a changed status must be written."""

    NONE = 0
    PROGRESS = 1  # counts and per-agent details: may be batched with later changes
    TRANSITION = 2  # phase, generation or a condition's status or reason: written at once


def _condition_facts(status: AgentGroupStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def change(old: AgentGroupStatus, new: AgentGroupStatus) -> Change:
    if old == new:
        return Change.NONE
    if (
        old.phase != new.phase
        or old.observed_generation != new.observed_generation
        or old.start_time != new.start_time
        or _condition_facts(old) != _condition_facts(new)
    ):
        return Change.TRANSITION
    return Change.PROGRESS


def to_json(status: AgentGroupStatus) -> dict[str, Any]:
    """The status as the API spells it (camelCase, unset fields left out)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)
