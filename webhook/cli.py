"""``agentgroup webhook``: the validating admission webhook for AgentGroups.

Top-level imports stay light: the ``agentgroup`` entry point imports this module for every command.
Exit status: 0 after a graceful stop, 1 when the process cannot run (kubeconfig, address in use),
2 for bad flag values.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certs.rotator import RotatorSettings

log = logging.getLogger("webhook")

DEFAULT_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``webhook`` command to the ``agentgroup`` command."""
    from agentgroup.flags import add_process_flags
    from certs.cli import add_rotator_arguments

    p = subparsers.add_parser(
        "webhook",
        help="serve the validating admission webhook for AgentGroups",
        description="Answer the kube-apiserver's AdmissionReviews for AgentGroups over TLS "
        "(POST /validate-agentgroup), with the rules `agentgroup validate` uses. The serving certificate "
        "is read from --cert-dir and reloaded when the files change.",
    )
    add_process_flags(p)
    p.add_argument(
        "--webhook-bind-address",
        default=":9443",
        metavar="ADDR",
        help="HOST:PORT or :PORT the webhook serves HTTPS on (default: %(default)s)",
    )
    p.add_argument(
        "--cert-dir",
        default=DEFAULT_CERT_DIR,
        type=Path,
        metavar="DIR",
        help="folder with tls.crt and tls.key, e.g. a mounted Secret (default: %(default)s)",
    )
    add_rotator_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agentgroup.logs import setup_logging
    from agentgroup.ops import parse_address
    from agentgroup.runner import run_process
    from certs.cli import rotator_settings

    for flag in ("webhook_bind_address", "metrics_bind_address", "health_probe_bind_address"):
        try:
            parse_address(getattr(args, flag))
        except ValueError as exc:
            print(f"agentgroup webhook: --{flag.replace('_', '-')}: {exc}", file=sys.stderr)
            return 2
    try:
        certificates = rotator_settings(args, args.cert_dir, args.kubeconfig)
    except ValueError as exc:
        print(f"agentgroup webhook: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_format)
    return run_process(lambda stop: serve(args, certificates, stop))


async def serve(args: argparse.Namespace, certificates: RotatorSettings, stop: asyncio.Event) -> int:
    """Run the webhook until ``stop`` is set; caches, rotator, reloader and servers share its life.

    In ``--cert-mode self-managed`` the rotator writes the certificate files the reloader serves.
    """
    from agentgroup.ops import Ops
    from certs.rotator import run_rotator
    from shared.kube import Kube, KubeConfigError, api_client
    from webhook.app import create_app
    from webhook.cluster import KubeCluster
    from webhook.server import WebhookServer
    from webhook.tls import CertReloader

    try:
        api = await api_client(args.kubeconfig)
    except KubeConfigError as exc:
        log.error("%s", exc)
        return 1
    async with Kube(api) as kube:
        cluster = KubeCluster(kube)
        tls = CertReloader(args.cert_dir)
        try:
            server = WebhookServer(create_app(cluster), tls.context, args.webhook_bind_address)
        except OSError as exc:
            log.error("--webhook-bind-address: %s", exc.strerror or exc)
            return 1
        ops = Ops()
        ops.add_readiness_check("informers-synced", lambda: cluster.synced)
        ops.add_readiness_check("certificate-loaded", lambda: tls.loaded)
        ops.add_readiness_check("webhook-listening", lambda: server.listening)
        log.info("serving AdmissionReviews on port %d", server.port, extra={"port": server.port})
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(cluster.run(stop))
                tasks.create_task(run_rotator(certificates, stop, api_client=api))
                tasks.create_task(tls.run(stop))
                tasks.create_task(server.serve(stop))
                tasks.create_task(ops.serve(args.metrics_bind_address, args.health_probe_bind_address, stop))
        except ExceptionGroup as group:
            unusable, other = group.split(OSError)  # e.g. an ops address already in use
            if other is not None or unusable is None:
                raise
            for error in unusable.exceptions:
                log.error("%s", getattr(error, "strerror", None) or error)
            return 1
    log.info("stopped")
    return 0
