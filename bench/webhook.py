"""Webhook throughput and latency over TLS on loopback, beside the ceiling of the same stack.

One server process, pinned to one core, runs the production serving path (``WebhookServer``:
uvicorn + httptools on uvloop, TLS from a ``CertReloader``) with the webhook app on a
``KubeCluster`` whose informers hold the runtimes of the group and one policy (a steady cluster:
every lookup is a cache hit). The same app also has a bare FastAPI endpoint that returns a fixed
allowed AdmissionReview: the ceiling of this stack. A load generator in this process, pinned to the
other core, keeps 1, 16 and 64 keep-alive TLS connections busy with the AdmissionReview of a
10-agent group and measures requests per second and p50/p99 latency for both endpoints.

The load generator is a lean HTTP/1.1 client on raw asyncio streams (httpx would be the bottleneck).
Goal: the webhook reaches at least 70% of the ceiling's throughput, with p99 under 10 ms at 16
connections. Run: ``.venv/bin/python -m bench.webhook [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import uvloop

from agentgroup.devcluster import REPO_ROOT
from certs import pki
from certs.files import write_cert_files
from shared.kube.resources import (
    AGENT_GROUP_POLICIES,
    AGENT_RUNTIMES,
    CODE_INTERPRETERS,
    NAMESPACES,
    Resource,
)
from shared.models import API_VERSION, KIND

AGENTS = 10
CONNECTIONS = (1, 16, 64)
WEBHOOK_PATH = "/validate-agentgroup"
CEILING_PATH = "/ceiling"
NAMESPACE = "bench"
SERVER_CPU, LOAD_CPU = 0, 1


def review() -> bytes:
    agents = [
        {
            "name": f"agent-{i}",
            "replicas": 1 + i % 3,
            "runtimeRef": {"kind": kind, "name": f"rt-{kind.lower()}"},
        }
        for i, kind in enumerate(["AgentRuntime", "CodeInterpreter"] * (AGENTS // 2))
    ]
    group = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "bench", "namespace": NAMESPACE, "labels": {"team": "bench"}},
        "spec": {
            "agents": agents,
            "dependencies": [{"from": f"agent-{i}", "to": f"agent-{i + 1}"} for i in range(AGENTS - 1)],
        },
    }
    request = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "runtime.agentcube.volcano.sh", "version": "v1alpha1", "kind": KIND},
        "resource": {
            "group": "runtime.agentcube.volcano.sh",
            "version": "v1alpha1",
            "resource": "agentgroups",
        },
        "name": "bench",
        "namespace": NAMESPACE,
        "operation": "CREATE",
        "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
        "object": group,
        "oldObject": None,
        "dryRun": False,
    }
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


# --- the server process --------------------------------------------------------------------------


class SteadyCluster:
    """Lists fixed objects; the watch stays quiet. Enough for informers to sync and serve from cache."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        return self.objects.get(res.plural, []), "1"

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()
        yield {}

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return None


def _object(kind: str, name: str, namespace: str = NAMESPACE, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        **fields,
    }


async def serve(cert_dir: Path, port_file: Path, stop: asyncio.Event) -> int:
    from fastapi import Response

    from webhook.app import create_app
    from webhook.cluster import KubeCluster
    from webhook.server import WebhookServer
    from webhook.tls import CertReloader

    kube = SteadyCluster(
        {
            AGENT_RUNTIMES.plural: [_object("AgentRuntime", "rt-agentruntime")],
            CODE_INTERPRETERS.plural: [_object("CodeInterpreter", "rt-codeinterpreter")],
            AGENT_GROUP_POLICIES.plural: [
                _object("AgentGroupPolicy", "limits", "", spec={"maxAgents": 50, "maxReplicasPerAgent": 5})
            ],
            NAMESPACES.plural: [{"metadata": {"name": NAMESPACE, "labels": {"team": "bench"}}}],
        }
    )
    cluster = KubeCluster(kube)
    tls = CertReloader(cert_dir)
    tls.reload()
    app = create_app(cluster)
    allowed = orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "x", "allowed": True},
        }
    )

    @app.post(CEILING_PATH)
    async def ceiling() -> Response:
        return Response(allowed, media_type="application/json")

    server = WebhookServer(app, tls.context, "127.0.0.1:0")
    caches = asyncio.create_task(cluster.run(stop))
    await asyncio.gather(*(inf.synced.wait() for inf in cluster.informers))
    serving = asyncio.create_task(server.serve(stop))
    # The listener is bound already; connections wait in its backlog until uvicorn accepts them.
    await asyncio.to_thread(port_file.write_text, str(server.port))
    await asyncio.gather(caches, serving)
    return 0


# --- the load generator --------------------------------------------------------------------------


@dataclass
class Point:
    path: str
    connections: int
    seconds: float
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # share of a core the load generator used: near 1.0 means it is the limit

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[int(q * 100) - 1] * 1000


async def _connection(
    port: int, ctx: ssl.SSLContext, request: bytes, check: bytes, until: float, warmup: float, point: Point
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    clock = time.perf_counter
    try:
        while (start := clock()) < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(length)
            if start < warmup:
                continue
            point.latencies.append(clock() - start)
            point.requests += 1
            if not head.startswith(b"HTTP/1.1 200") or check not in body:
                point.errors += 1
    finally:
        writer.close()


async def measure(port: int, ctx: ssl.SSLContext, path: str, connections: int, seconds: float) -> Point:
    body = review()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    point = Point(path, connections, seconds)
    warmup = time.perf_counter() + min(1.0, seconds / 5)
    until = warmup + seconds
    cpu = time.process_time()
    await asyncio.gather(
        *(
            _connection(port, ctx, request, b'"allowed":true', until, warmup, point)
            for _ in range(connections)
        )
    )
    point.client_cpu = (time.process_time() - cpu) / (seconds + min(1.0, seconds / 5))
    return point


def _pin(pid: int, cpu: int) -> str:
    if not hasattr(os, "sched_setaffinity") or cpu not in os.sched_getaffinity(0):
        return "not pinned"
    os.sched_setaffinity(pid, {cpu})
    return f"CPU {cpu}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per point (default: 5)")
    parser.add_argument("--serve", nargs=2, metavar=("CERT_DIR", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        from agentgroup.runner import run_process

        cert_dir, port_file = map(Path, args.serve)
        return run_process(lambda stop: serve(cert_dir, port_file, stop))

    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        root = Path(tmp)
        ca = pki.new_ca("bench CA", valid_for=timedelta(hours=1))
        serving = pki.new_serving_cert(
            ca, ["localhost"], ip_addresses=["127.0.0.1"], valid_for=timedelta(hours=1)
        )
        write_cert_files(root / "certs", {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem})
        port_file = root / "port"
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.webhook", "--serve", str(root / "certs"), str(port_file)],
            cwd=REPO_ROOT,
        )
        try:
            server_cpu = _pin(server.pid, SERVER_CPU)
            load_cpu = _pin(os.getpid(), LOAD_CPU)
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    print("the bench server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            port = int(port_file.read_text())
            ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
            print(
                f"AdmissionReview of a {AGENTS}-agent group ({len(review())} bytes), TLS on loopback; "
                f"server: one uvicorn worker on {server_cpu}; load: {load_cpu}; {args.seconds:g} s per point"
            )
            print(
                f"{'conns':>5}  {'endpoint':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
                f"{'load cpu':>10}  vs ceiling"
            )
            results: dict[int, tuple[Point, Point]] = {}
            for connections in CONNECTIONS:
                ceiling = uvloop.run(measure(port, ctx, CEILING_PATH, connections, args.seconds))
                webhook = uvloop.run(measure(port, ctx, WEBHOOK_PATH, connections, args.seconds))
                results[connections] = (ceiling, webhook)
                for name, point in (("ceiling (fixed answer)", ceiling), ("webhook", webhook)):
                    share = f"{webhook.rate / ceiling.rate:6.0%}" if point is webhook else ""
                    print(
                        f"{connections:>5}  {name:<22}{point.rate:>9.0f}{point.quantile(0.5):>9.2f}"
                        f"{point.quantile(0.99):>9.2f}{point.errors:>8}{point.client_cpu:>10.0%}  {share}",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(timeout=30)
    ceiling, webhook = results[16]
    print(
        f"at 16 connections: webhook {webhook.rate / ceiling.rate:.0%} of the ceiling (goal >= 70%), "
        f"p99 {webhook.quantile(0.99):.2f} ms (goal < 10 ms)"
    )
    return 1 if any(p.errors for pair in results.values() for p in pair) else 0


if __name__ == "__main__":
    sys.exit(main())
