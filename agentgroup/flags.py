"""Command-line flags every long-running process takes, with controller-runtime's names and defaults."""

from __future__ import annotations

import argparse


def add_process_flags(p: argparse.ArgumentParser) -> None:
    """``--kubeconfig``, the ops addresses and logging (kept light: parsers are built for ``--help``)."""
    p.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)"
    )
    p.add_argument(
        "--metrics-bind-address",
        default=":8080",
        metavar="ADDR",
        help="address of /metrics; 0 disables it (default: %(default)s)",
    )
    p.add_argument(
        "--health-probe-bind-address",
        default=":8081",
        metavar="ADDR",
        help="address of /healthz and /readyz; 0 disables it (default: %(default)s)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="json", choices=["json", "text"])
