"""The FastAPI application that answers the kube-apiserver's AdmissionReviews for AgentGroups.

The admission route is a plain Starlette endpoint: the body is read once, decoded by
:func:`webhook.review.read_review` and answered with orjson, without FastAPI's model machinery on
the hot path. Whatever the input, the
answer is a clear 4xx or an AdmissionReview, never a 500.
"""

from __future__ import annotations

import logging
import time

import msgspec
import orjson
from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

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
from webhook.review import read_review

log = logging.getLogger(__name__)

VALIDATE_PATH = "/validate-agentgroup"
# controller-runtime's limit: an object may be up to 3 MiB and a review carries it twice.
MAX_BODY_BYTES = 7 * 1024 * 1024
JSON = "application/json"


def _status(code: int, reason: str, message: str) -> Response:
    """A Kubernetes ``Status`` body: the kube-apiserver quotes its message in the error it reports."""
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message}
    return Response(orjson.dumps({**body, "reason": reason, "code": code}), code, media_type=JSON)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
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


def _count(review: AdmissionRequest, decision: Decision) -> None:
    allowed = decision.allowed
    metrics.ADMISSIONS.labels(review.operation, "allowed" if allowed else "denied").inc()
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
    in_flight = metrics.IN_FLIGHT.labels(VALIDATE_PATH)
    latency = metrics.LATENCY.labels(VALIDATE_PATH)

    async def judge(review: AdmissionRequest) -> Decision:
        try:
            return await decide(review, cluster)
        except Exception:  # a bug must cost one request a clear denial, never the process
            log.exception("failed to judge request %s", review.uid, extra={"uid": review.uid})
            message = "the webhook failed while judging this request; its log has the details"
            return Decision(errors=(Finding("", INTERNAL_ERROR, message),))

    async def answer(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.partition(";")[0].strip().lower() != JSON:
            return _status(415, "UnsupportedMediaType", f"Content-Type must be {JSON}, got {content_type!r}")
        too_large = f"the body exceeds {max_body_bytes} bytes"
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            return _status(413, "RequestEntityTooLarge", too_large)
        try:
            body = await _read_body(request, max_body_bytes)
        except ClientDisconnect:
            return _status(400, "BadRequest", "the client disconnected before sending the whole body")
        if body is None:
            return _status(413, "RequestEntityTooLarge", too_large)
        try:
            review = read_review(body)
        except msgspec.DecodeError as exc:
            return _status(400, "BadRequest", f"the body is not valid JSON: {exc}")
        except ReviewError as exc:
            return _status(400, "BadRequest", f"not a usable AdmissionReview: {exc}")
        decision = await judge(review)
        _count(review, decision)
        _log_dryrun(review, decision)
        if not decision.allowed:
            _log_denial(review, decision)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("allowed %s of AgentGroup %s/%s", review.operation, review.namespace, review.name)
        return Response(orjson.dumps(review_response(review, decision)), media_type=JSON)

    async def admit(request: Request) -> Response:
        started = time.perf_counter()
        in_flight.inc()
        try:
            response = await answer(request)
        finally:
            in_flight.dec()
        metrics.REQUESTS.labels(str(response.status_code), VALIDATE_PATH).inc()
        latency.observe(time.perf_counter() - started)
        return response

    app.add_route(VALIDATE_PATH, admit, methods=["POST"], include_in_schema=False)
    return app
