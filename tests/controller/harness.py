"""Running the controller's manager against :class:`FakeApi`, and acting as users and agent-sandbox."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from controller.leader import LeaderConfig
from controller.manager import Manager, ManagerOptions
from controller.reconciler import ReconcilerConfig
from shared.kube.resources import (
    AGENT_GROUPS,
    CODE_INTERPRETERS,
    SANDBOX_CLAIM_GROUP,
    SANDBOX_GROUP,
    SANDBOXES_V1BETA1,
    Resource,
)
from shared.planner import PlanConfig
from tests.controller.fake_api import FakeApi
from tests.controller.objects import NS, T0, ready_condition

SERVED = {SANDBOX_GROUP: ["v1beta1", "v1alpha1"], SANDBOX_CLAIM_GROUP: ["v1alpha1"]}


def options(
    *,
    leader: LeaderConfig | None = None,
    status_interval: float = 3600.0,
    plan: PlanConfig | None = None,
    workers: int = 4,
) -> ManagerOptions:
    """No ops servers, few workers, and (by default) progress-only status writes held back."""
    return ManagerOptions(
        metrics_addr="0",
        health_addr="0",
        workers=workers,
        reconciler=ReconcilerConfig(plan=plan or PlanConfig(), status_interval=status_interval),
        leader=leader,
        discovery_retry=0.01,
    )


@contextlib.asynccontextmanager
async def running(
    api: FakeApi, opts: ManagerOptions | None = None, identity: str = "test"
) -> AsyncIterator[Manager]:
    """A manager running until the block ends (a graceful stop)."""
    manager = Manager(api, opts or options(), identity=identity)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        yield manager
    finally:
        stop.set()
        await task


async def wait_until(predicate: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.005)


async def add_runtime(api: FakeApi, name: str = "py", namespace: str = NS) -> None:
    body = {
        "apiVersion": CODE_INTERPRETERS.api_version,
        "kind": "CodeInterpreter",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"image": "python:3.12"}},
    }
    await api.create(CODE_INTERPRETERS, body, namespace)


async def add_group(api: FakeApi, obj: dict[str, Any]) -> dict[str, Any]:
    body = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k not in ("uid", "generation")}}
    return await api.create(AGENT_GROUPS, body, obj["metadata"]["namespace"])


def group(api: FakeApi, name: str = "g") -> dict[str, Any]:
    obj = api.obj(AGENT_GROUPS, name, NS)
    assert obj is not None
    return obj


def phase(api: FakeApi, name: str = "g") -> str:
    return str(group(api, name).get("status", {}).get("phase", ""))


def condition(api: FakeApi, type_: str, name: str = "g") -> dict[str, Any]:
    return next(c for c in group(api, name)["status"]["conditions"] if c["type"] == type_)


def sandbox_names(api: FakeApi, res: Resource = SANDBOXES_V1BETA1) -> list[str]:
    return [o["metadata"]["name"] for o in api.items(res, NS)]


async def mark_ready(api: FakeApi, name: str, ready: bool = True, res: Resource = SANDBOXES_V1BETA1) -> None:
    """What agent-sandbox does once the pod runs (or stops running)."""
    patch = {"status": {"conditions": [ready_condition(ready, T0 + timedelta(seconds=1))]}}
    await api.patch(res, name, patch, NS, subresource="status")


async def ready_as_created(api: FakeApi, name: str = "g", within: float = 10.0) -> None:
    """Play agent-sandbox: mark each new Sandbox Ready until the group is Running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while phase(api, name) != "Running":
        for obj in api.items(SANDBOXES_V1BETA1, NS):
            if not obj.get("status"):
                await mark_ready(api, obj["metadata"]["name"])
        if loop.time() > deadline:
            raise AssertionError(f"{name} not Running after {within:g} s: {group(api, name).get('status')}")
        await asyncio.sleep(0.005)
