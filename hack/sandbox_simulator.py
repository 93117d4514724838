"""Play agent-sandbox in a cluster without it: make new Sandboxes Ready after a delay, or fail them.

The AgentGroup controller creates Sandboxes and waits for their ``Ready`` condition, which
agent-sandbox would set once the pod runs. On a bare control plane (the demo, the e2e tests, the
benchmarks) nothing does; this process does, through the status subresource, as agent-sandbox would:

* every Sandbox carrying the ``runtime.agentcube.io/agent-group`` label (all Sandboxes with ``--all``)
  and no Ready condition yet becomes ``Ready=True`` after ``--ready-after``;
* a Sandbox named by ``--fail NAME`` becomes ``Ready=False`` instead, and so does any Sandbox that
  gets the annotation ``sandbox-simulator.agentcube.io/fail=true`` (for example through
  ``kubectl annotate``), even one that was Ready.

Usage: ``hack/sandbox-simulator [--kubeconfig PATH] [--namespace NS] [--ready-after 1s] [--fail NAME]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentgroup.logs import setup_logging
from agentgroup.runner import run_process
from shared.kube import ApiError, EventType, Informer, Kube, KubeConfigError, Resource, api_client
from shared.kube.informer import object_key
from shared.kube.resources import SANDBOX_GROUP, SANDBOXES_V1ALPHA1, SANDBOXES_V1BETA1
from shared.sandboxes import GROUP_LABEL, parse_duration, rfc3339

log = logging.getLogger("sandbox-simulator")

FAIL_ANNOTATION = "sandbox-simulator.agentcube.io/fail"
RESOURCES = {r.version: r for r in (SANDBOXES_V1ALPHA1, SANDBOXES_V1BETA1)}
ATTEMPTS = 5


def _ready(obj: dict[str, Any]) -> str | None:
    """The status of the Sandbox's Ready condition, None when it has none."""
    for c in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == "Ready":
            return str(c.get("status"))
    return None


def ready_patch(obj: dict[str, Any], ready: bool, now: datetime) -> dict[str, Any]:
    """A status patch setting the Ready condition, keeping the others, conditional on resourceVersion."""
    meta = obj.get("metadata") or {}
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "DependenciesReady" if ready else "SandboxFailed",
        "message": "Pod is Ready; Service Exists" if ready else "the sandbox simulator failed this Sandbox",
        "observedGeneration": meta.get("generation", 1),
        "lastTransitionTime": rfc3339(now),
    }
    others = [
        c
        for c in (obj.get("status") or {}).get("conditions") or ()
        if isinstance(c, dict) and c.get("type") != "Ready"
    ]
    return {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "status": {"conditions": [*others, condition]},
    }


class Simulator:
    def __init__(
        self,
        kube: Kube,
        res: Resource,
        *,
        delay: float,
        fail: Sequence[str],
        namespace: str | None,
        every: bool,
    ) -> None:
        self.kube = kube
        self.delay = delay
        self.fail = set(fail)
        self.pending: set[tuple[str, str]] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.informer = Informer(
            kube,
            res,
            namespace=namespace,
            label_selector=None if every else GROUP_LABEL,
            handler=self._on_event,
        )

    def wanted(self, obj: dict[str, Any]) -> bool | None:
        """The Ready status this Sandbox should get now, or None to leave it alone."""
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        failing = (
            meta.get("name") in self.fail or (meta.get("annotations") or {}).get(FAIL_ANNOTATION) == "true"
        )
        current = _ready(obj)
        if failing:
            return False if current != "False" else None
        return True if current is None else None

    def _on_event(self, event: EventType, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        if event == "DELETED" or key in self.pending or self.wanted(obj) is None:
            return
        self.pending.add(key)
        task = asyncio.create_task(self._mark(key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _mark(self, key: tuple[str, str]) -> None:
        namespace, name = key
        try:
            await asyncio.sleep(self.delay)
            for attempt in range(ATTEMPTS):
                obj = self.informer.get(name, namespace)
                want = self.wanted(obj) if obj is not None else None
                if obj is None or want is None:
                    return
                try:
                    await self.kube.patch(
                        self.informer.res,
                        name,
                        ready_patch(obj, want, datetime.now(UTC)),
                        namespace,
                        subresource="status",
                    )
                except ApiError as exc:
                    if exc.is_not_found:
                        return
                    log.info("marking %s/%s failed (%s); retrying", namespace, name, exc)
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                log.info("Sandbox %s/%s: Ready=%s", namespace, name, want, extra={"sandbox": name})
                return
        finally:
            self.pending.discard(key)

    async def run(self, stop: asyncio.Event) -> None:
        await self.informer.run(stop)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _served_version(kube: Kube, forced: str) -> str | None:
    if forced != "auto":
        return forced
    return next((v for v in await kube.discover(SANDBOX_GROUP) if v in RESOURCES), None)


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    try:
        api = await api_client(args.kubeconfig)
    except KubeConfigError as exc:
        log.error("%s", exc)
        return 1
    async with Kube(api) as kube:
        try:
            version = await _served_version(kube, args.sandbox_api_version)
        except ApiError as exc:
            log.error("cannot reach the API server: %s", exc)
            return 1
        if version is None:
            log.error("Sandboxes (%s) are not served: install the Sandbox CRD first", SANDBOX_GROUP)
            return 1
        sim = Simulator(
            kube,
            RESOURCES[version],
            delay=args.ready_after.total_seconds(),
            fail=args.fail,
            namespace=args.namespace,
            every=args.all,
        )
        log.info(
            "marking Sandboxes %s Ready after %s",
            version,
            args.ready_after,
            extra={"namespace": args.namespace or "*", "fail": sorted(args.fail)},
        )
        await sim.run(stop)
    return 0


def _duration(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sandbox-simulator", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)"
    )
    p.add_argument("--namespace", metavar="NS", help="only this namespace (default: all)")
    p.add_argument("--ready-after", type=_duration, default="1s", metavar="DURATION", help="default: 1s")
    p.add_argument("--fail", action="append", default=[], metavar="NAME", help="make this Sandbox fail")
    p.add_argument("--all", action="store_true", help="every Sandbox, not only those of AgentGroups")
    p.add_argument("--sandbox-api-version", choices=["auto", *RESOURCES], default="auto")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["json", "text"])
    args = p.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    return run_process(lambda stop: serve(args, stop))


if __name__ == "__main__":
    sys.exit(main())
