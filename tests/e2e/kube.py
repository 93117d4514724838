"""Helpers for end-to-end tests: kubectl against the session's control plane, waiting with a deadline,
reading objects, and playing agent-sandbox's part (marking Sandboxes Ready).

The ``cluster`` fixture (conftest.py) calls :func:`use` once the control plane is up; every helper
then runs the venv's kubectl with that control plane's admin kubeconfig.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from agentgroup.devcluster import LocalControlPlane

__all__ = [
    "Result",
    "condition",
    "get_json",
    "kubectl",
    "mark_sandbox_ready",
    "use",
    "wait_for",
    "wait_for_condition",
    "wait_gone",
]

T = TypeVar("T")

#: The Sandbox resource, fully qualified so a name clash with another group cannot shadow it.
SANDBOXES = "sandboxes.agents.x-k8s.io"

_cluster: LocalControlPlane | None = None


def use(cluster: LocalControlPlane | None) -> None:
    """Point the helpers at ``cluster`` (None: at nothing)."""
    global _cluster
    _cluster = cluster


def _active() -> LocalControlPlane:
    if _cluster is None:
        raise RuntimeError("no control plane: request the `cluster` fixture before using tests.e2e.kube")
    return _cluster


@dataclass(frozen=True)
class Result:
    """What a kubectl command did: its exit code and its output, as a user sees them."""

    code: int
    stdout: str
    stderr: str
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f"$ {self.command}\nexit code {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def kubectl(*args: str, input: str | None = None, check: bool = False, timeout: float = 120.0) -> Result:
    """Run ``kubectl ARGS`` against the session's control plane.

    With ``check=True`` a non-zero exit fails the test with the command and both outputs.
    """
    done = _active().kubectl(*args, input=input, check=False, timeout=timeout)
    result = Result(done.returncode, done.stdout, done.stderr, "kubectl " + shlex.join(args))
    if check and not result.ok:
        raise AssertionError(f"kubectl failed:\n{result}")
    return result


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, *, interval: float = 0.1) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Fails the test after ``timeout`` seconds with ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value: {value!r}")
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)


def get_json(kind: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
    """The object as JSON, or None if it does not exist."""
    args = ["get", kind, name, "-o", "json"]
    if ns is not None:
        args += ["-n", ns]
    r = kubectl(*args)
    if r.ok:
        obj: dict[str, Any] = json.loads(r.stdout)
        return obj
    if "NotFound" in r.stderr or "not found" in r.stderr:
        return None
    raise AssertionError(f"kubectl get failed:\n{r}")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition of type ``type_`` in ``obj.status.conditions``, or None."""
    if obj is None:
        return None
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == type_:
            found: dict[str, Any] = c
            return found
    return None


def wait_for_condition(
    kind: str,
    name: str,
    ns: str | None = None,
    *,
    type_: str = "Ready",
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Wait until the object has condition ``type_`` with ``status`` (and ``reason``); return the object."""

    def met() -> dict[str, Any] | None:
        obj = get_json(kind, name, ns)
        c = condition(obj, type_)
        if c is None or c.get("status") != status or (reason is not None and c.get("reason") != reason):
            return None
        return obj

    where = f" in {ns}" if ns else ""
    want = f"{type_}={status}" + (f" ({reason})" if reason else "")
    return wait_for(met, timeout, f"{kind}/{name}{where} to have condition {want}")


def wait_gone(kind: str, name: str, ns: str | None = None, *, timeout: float = 60.0) -> None:
    """Wait until the object no longer exists."""
    where = f" in {ns}" if ns else ""
    wait_for(lambda: get_json(kind, name, ns) is None, timeout, f"{kind}/{name}{where} to be deleted")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mark_sandbox_ready(name: str, ns: str, ready: bool = True, *, message: str | None = None) -> None:
    """Set the Sandbox's ``Ready`` condition through the status subresource, as agent-sandbox does.

    The other conditions are kept; ``lastTransitionTime`` changes only when the status changes
    (``meta.SetStatusCondition`` semantics), and ``observedGeneration`` is the Sandbox's generation.
    """
    for _ in range(5):
        obj = get_json(SANDBOXES, name, ns)
        if obj is None:
            raise AssertionError(f"Sandbox {ns}/{name} does not exist")
        r = kubectl(
            "patch",
            SANDBOXES,
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(_ready_patch(obj, ready, message)),
        )
        if r.ok:
            return
        if "the object has been modified" not in r.stderr:  # a write raced ours: read again and retry
            raise AssertionError(f"marking Sandbox {ns}/{name} Ready={ready} failed:\n{r}")
    raise AssertionError(f"marking Sandbox {ns}/{name} Ready={ready} kept conflicting with other writers")


def _ready_patch(obj: dict[str, Any], ready: bool, message: str | None) -> dict[str, Any]:
    status = "True" if ready else "False"
    old = condition(obj, "Ready")
    ready_condition = {
        "type": "Ready",
        "status": status,
        "reason": "DependenciesReady" if ready else "DependenciesNotReady",
        "message": message or ("Pod is Ready; Service Exists" if ready else "Pod exists but is not ready"),
        "observedGeneration": obj["metadata"].get("generation", 1),
        "lastTransitionTime": old["lastTransitionTime"]
        if old is not None and old.get("status") == status
        else _now(),
    }
    others: Sequence[dict[str, Any]] = [
        c for c in (obj.get("status", {}).get("conditions") or []) if c.get("type") != "Ready"
    ]
    # The resourceVersion makes the write conditional: it never overwrites a status it has not read.
    return {
        "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
        "status": {"conditions": [*others, ready_condition]},
    }
