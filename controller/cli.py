"""``agentgroup controller``: reconcile AgentGroups into Sandboxes, in dependency order, with status.

Top-level imports stay light: the ``agentgroup`` entry point imports this module for every command.
Exit status: 0 after a graceful stop, 1 when the process cannot run (kubeconfig, address in use) or
lost its leadership, 2 for bad flag values.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.audit import AuditConfig

log = logging.getLogger("controller")

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _duration(text: str) -> timedelta:
    from shared.sandboxes import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < timedelta(0):
        raise argparse.ArgumentTypeError(f'"{text}" is negative')
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a whole number') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'"{text}" must be at least 1')
    return value


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f'"{text}" is not true or false')


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``controller`` command to the ``agentgroup`` command."""
    from agentgroup.flags import add_process_flags

    p = subparsers.add_parser(
        "controller",
        help="run the AgentGroup controller",
        description="Watch AgentGroups, their runtimes and their Sandboxes; create each agent's Sandboxes "
        "once the agents it depends on are Ready, apply the failure policy, and keep the status. With "
        "leader election, one replica works while the others keep warm caches.",
    )
    add_process_flags(p)
    p.add_argument(
        "--leader-elect",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="elect a leader on a Lease so that only one replica works (default: %(default)s)",
    )
    p.add_argument(
        "--leader-election-id", default="agentgroup-controller", metavar="NAME", help="the Lease's name"
    )
    p.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="the Lease's namespace (default: $POD_NAMESPACE, else the pod's namespace, else default)",
    )
    p.add_argument("--leader-elect-lease-duration", type=_duration, default="15s", metavar="DURATION")
    p.add_argument("--leader-elect-renew-deadline", type=_duration, default="10s", metavar="DURATION")
    p.add_argument("--leader-elect-retry-period", type=_duration, default="2s", metavar="DURATION")
    p.add_argument(
        "--max-concurrent-reconciles",
        type=_positive_int,
        default=16,
        metavar="N",
        help="groups reconciled at the same time (default: %(default)s)",
    )
    p.add_argument("--namespace", metavar="NS", help="only watch this namespace (default: all namespaces)")
    p.add_argument(
        "--sandbox-api-version",
        choices=["auto", "v1alpha1", "v1beta1"],
        default="auto",
        help="Sandbox API version; auto picks the server's preferred one (default: %(default)s)",
    )
    p.add_argument(
        "--startup-timeout",
        type=_duration,
        default="10m",
        metavar="DURATION",
        help="a group not Running this long after it started is Failed (DeadlineExceeded) (default: 10m)",
    )
    p.add_argument(
        "--retry-limit",
        type=_positive_int,
        default=5,
        metavar="N",
        help="RetrySubAgent: recreations of one lost Sandbox before the group fails (default: %(default)s)",
    )
    p.add_argument(
        "--retry-backoff", type=_duration, default="5s", metavar="DURATION", help="first retry delay"
    )
    p.add_argument("--retry-backoff-max", type=_duration, default="5m", metavar="DURATION")
    p.add_argument(
        "--unready-grace",
        type=_duration,
        default="1m",
        metavar="DURATION",
        help="RetrySubAgent: replace a Sandbox of a Running group not Ready this long (default: 1m)",
    )
    p.add_argument(
        "--status-update-interval",
        type=_duration,
        default="5s",
        metavar="DURATION",
        help="least time between two status writes of a group that only report progress (default: 5s)",
    )
    p.add_argument(
        "--audit-interval",
        type=_duration,
        default="60s",
        metavar="DURATION",
        help="leader: audit every AgentGroup against every AgentGroupPolicy this often, and soon after "
        "a policy or namespace-label change, reporting on each policy's status; 0 disables the audit "
        "(default: 60s)",
    )
    p.set_defaults(func=run)


def _lease_namespace(args: argparse.Namespace) -> str:
    if args.leader_election_namespace:
        return str(args.leader_election_namespace)
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def audit_config(args: argparse.Namespace) -> AuditConfig | None:
    """The policy audit's settings from ``--audit-interval``; None when it is 0 (disabled)."""
    from controller.audit import AuditConfig

    seconds = args.audit_interval.total_seconds()
    return AuditConfig(interval=seconds) if seconds > 0 else None


def run(args: argparse.Namespace) -> int:
    from agentgroup.logs import setup_logging
    from agentgroup.ops import parse_address
    from agentgroup.runner import run_process

    for flag in ("metrics_bind_address", "health_probe_bind_address"):
        try:
            parse_address(getattr(args, flag))
        except ValueError as exc:
            print(f"agentgroup controller: --{flag.replace('_', '-')}: {exc}", file=sys.stderr)
            return 2
    setup_logging(args.log_level, args.log_format)
    return run_process(lambda stop: serve(args, stop))


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from controller.leader import LeaderConfig
    from controller.manager import Manager, ManagerOptions
    from controller.reconciler import ReconcilerConfig
    from shared.kube import Kube, KubeConfigError, api_client
    from shared.planner import PlanConfig

    try:
        api = await api_client(args.kubeconfig)
    except KubeConfigError as exc:
        log.error("%s", exc)
        return 1
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    leader = (
        LeaderConfig(
            name=args.leader_election_id,
            namespace=_lease_namespace(args),
            identity=identity,
            lease_duration=args.leader_elect_lease_duration.total_seconds(),
            renew_deadline=args.leader_elect_renew_deadline.total_seconds(),
            retry_period=args.leader_elect_retry_period.total_seconds(),
        )
        if args.leader_elect
        else None
    )
    options = ManagerOptions(
        metrics_addr=args.metrics_bind_address,
        health_addr=args.health_probe_bind_address,
        namespace=args.namespace,
        sandbox_api=None if args.sandbox_api_version == "auto" else args.sandbox_api_version,
        workers=args.max_concurrent_reconciles,
        reconciler=ReconcilerConfig(
            plan=PlanConfig(
                startup_timeout=args.startup_timeout,
                retry_limit=args.retry_limit,
                retry_base=args.retry_backoff,
                retry_cap=args.retry_backoff_max,
                unready_grace=args.unready_grace,
            ),
            status_interval=args.status_update_interval.total_seconds(),
        ),
        leader=leader,
        audit=audit_config(args),
    )
    async with Kube(api) as kube:
        manager = Manager(kube, options, identity=identity)
        try:
            code = await manager.run(stop)
        except ExceptionGroup as group:
            unusable, other = group.split(OSError)  # e.g. an ops address already in use
            if other is not None or unusable is None:
                raise
            for error in unusable.exceptions:
                log.error("%s", error)
            return 1
    log.info("stopped", extra={"exit_code": code})
    return code
