"""The FastAPI application that answers the kube-apiserver's AdmissionReviews for AgentGroups.

The admission route is a plain ASGI endpoint: the body is read once, decoded by :mod:`webhook.review`
and answered with orjson, without FastAPI's model machinery on the hot path. Whatever the input, the
answer is a clear 4xx or an AdmissionReview, never a 500.
"""

from __future__ import annotations

import logging
import time

import msgspec
import orjson
from fastapi import FastAPI
from prometheus_client import Counter
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from shared.findings import Finding
from webhook import metrics
from webhook.admission import (
    INTERNAL_ERROR,
    AdmissionRequest,
    Cluster,
    Decision,
    ReviewError,
    decide,
    review_response,
)
from webhook.review import read_fast, read_reference

log = logging.getLogger(__name__)

VALIDATE_PATH = "/validate-agentgroup"
# controller-runtime's limit: an object may be up to 3 MiB and a review carries it twice.
MAX_BODY_BYTES = 7 * 1024 * 1024
JSON = "application/json"

Answer = tuple[int, bytes]
"""HTTP status and JSON body."""


def _status(code: int, reason: str, message: str) -> Answer:
    """A Kubernetes ``Status`` body: the kube-apiserver quotes its message in the error it reports."""
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message}
    return code, orjson.dumps({**body, "reason": reason, "code": code})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:  # ASGI servers give names in lower case
        if key == name:
            return str(value.decode("latin-1"))
    return ""


class _Disconnected(Exception):
    """The client went away before sending the whole body."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _log_denial(review: AdmissionRequest, decision: Decision) -> None:
    denials = decision.denials
    reasons = sorted({str(d.reason) for d in denials})
    log.info(
        "denied %s of AgentGroup %s/%s: %s",
        review.operation,
        review.namespace,
        review.name,
        ", ".join(reasons),
        extra={
            "namespace": review.namespace,
            "agentgroup": review.name,
            "user": review.user,
            "operation": review.operation,
            "dry_run": review.dry_run,
            "uid": review.uid,
            "reasons": reasons,
            "violations": [str(d) for d in denials],
        },
    )


def _log_dryrun(review: AdmissionRequest, decision: Decision) -> None:
    """Findings of ``dryrun`` policies: never shown to the user, so the log and a metric are where they go."""
    findings = decision.verdict.dryrun if decision.verdict is not None else ()
    if not findings:
        return
    log.info(
        "dryrun policy findings for %s of AgentGroup %s/%s (not enforced): %s",
        review.operation,
        review.namespace,
        review.name,
        "; ".join(str(f) for f in findings),
        extra={
            "namespace": review.namespace,
            "agentgroup": review.name,
            "user": review.user,
            "operation": review.operation,
            "dry_run": review.dry_run,
            "uid": review.uid,
            "dryrun_findings": [str(f) for f in findings],
        },
    )


class _Admission:
    """The ASGI endpoint of ``POST {VALIDATE_PATH}``.

    Plain ASGI rather than Starlette's Request and Response: on this path, which every AgentGroup
    write in the cluster waits for, they cost about as much as reading the review. Metric children
    are bound once, and the in-flight gauge reads a counter when scraped instead of locking twice
    per request.
    """

    def __init__(self, cluster: Cluster, max_body_bytes: int) -> None:
        self._cluster = cluster
        self._max_body_bytes = max_body_bytes
        self._in_flight = 0
        metrics.IN_FLIGHT.labels(VALIDATE_PATH).set_function(lambda: self._in_flight)
        self._latency = metrics.LATENCY.labels(VALIDATE_PATH)
        self._fast_reads = metrics.REVIEW_READS.labels("fast")
        self._reference_reads = metrics.REVIEW_READS.labels("reference")
        self._by_code: dict[int, Counter] = {}
        self._by_verdict: dict[tuple[str, bool], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        self._in_flight += 1
        try:
            code, body = await self._answer(scope, receive)
        finally:
            self._in_flight -= 1
        if (requests := self._by_code.get(code)) is None:
            requests = self._by_code[code] = metrics.REQUESTS.labels(str(code), VALIDATE_PATH)
        requests.inc()
        self._latency.observe(time.perf_counter() - started)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        content_type = _header(scope, b"content-type")
        if content_type.partition(";")[0].strip().lower() != JSON:
            return _status(415, "UnsupportedMediaType", f"Content-Type must be {JSON}, got {content_type!r}")
        limit = self._max_body_bytes
        too_large = f"the body exceeds {limit} bytes"
        length = _header(scope, b"content-length")
        if length.isascii() and length.isdigit() and int(length) > limit:
            return _status(413, "RequestEntityTooLarge", too_large)
        try:
            body = await _read_body(receive, limit)
        except _Disconnected:
            return _status(400, "BadRequest", "the client disconnected before sending the whole body")
        if body is None:
            return _status(413, "RequestEntityTooLarge", too_large)
        review = read_fast(body)
        if review is not None:
            self._fast_reads.inc()
        else:
            self._reference_reads.inc()
            try:
                review = read_reference(body)
            except msgspec.DecodeError as exc:
                return _status(400, "BadRequest", f"the body is not valid JSON: {exc}")
            except ReviewError as exc:
                return _status(400, "BadRequest", f"not a usable AdmissionReview: {exc}")
        decision = await self._judge(review)
        self._count(review, decision)
        _log_dryrun(review, decision)
        if not decision.allowed:
            _log_denial(review, decision)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("allowed %s of AgentGroup %s/%s", review.operation, review.namespace, review.name)
        return 200, orjson.dumps(review_response(review, decision))

    async def _judge(self, review: AdmissionRequest) -> Decision:
        try:
            return await decide(review, self._cluster)
        except Exception:  # a bug must cost one request a clear denial, never the process
            log.exception("failed to judge request %s", review.uid, extra={"uid": review.uid})
            message = "the webhook failed while judging this request; its log has the details"
            return Decision(errors=(Finding("", INTERNAL_ERROR, message),))

    def _count(self, review: AdmissionRequest, decision: Decision) -> None:
        allowed = decision.allowed
        if (admissions := self._by_verdict.get((review.operation, allowed))) is None:
            verdict = "allowed" if allowed else "denied"
            admissions = self._by_verdict[review.operation, allowed] = metrics.ADMISSIONS.labels(
                review.operation, verdict
            )
        admissions.inc()
        if not allowed:
            for reason in {d.reason for d in decision.denials}:
                metrics.DENIALS.labels(reason).inc()
        for warning in decision.warnings:
            metrics.WARNINGS.labels(warning.reason).inc()
        if decision.verdict is not None and decision.verdict.dryrun:
            metrics.POLICY_DRYRUN.inc(len(decision.verdict.dryrun))


def create_app(cluster: Cluster, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The webhook app; ``POST {VALIDATE_PATH}`` judges AgentGroups against ``cluster``."""
    app = FastAPI(title="agentgroup webhook", docs_url=None, redoc_url=None, openapi_url=None)
    app.router.routes.append(Route(VALIDATE_PATH, _Admission(cluster, max_body_bytes), methods=["POST"]))
    return app
