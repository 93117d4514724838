"""The webhook's Prometheus metrics, on the process-wide registry that ``/metrics`` serves.

The first three keep controller-runtime's names and labels, so dashboards built for Go webhooks work.
Cache size and sync state come from the informers (``agentgroup_informer_objects``,
``agentgroup_informer_synced``), Kubernetes API calls from ``agentgroup_kube_requests_total``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "controller_runtime_webhook_requests_total",
    "Total number of admission requests by HTTP status code.",
    ["code", "webhook"],
)
IN_FLIGHT = Gauge(
    "controller_runtime_webhook_requests_in_flight",
    "Current number of admission requests being served.",
    ["webhook"],
)
LATENCY = Histogram(
    "controller_runtime_webhook_latency_seconds",
    "Histogram of the latency of processing admission requests.",
    ["webhook"],
    # Finer than the client default below 5 ms, where this webhook's answers fall.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ADMISSIONS = Counter(
    "agentgroup_webhook_admissions_total",
    "Answered AdmissionReviews by operation and verdict (allowed, denied).",
    ["operation", "verdict"],
)
DENIALS = Counter(
    "agentgroup_webhook_denials_total",
    "Denied requests by reason code (a request with several reason codes counts once for each).",
    ["reason"],
)
WARNINGS = Counter(
    "agentgroup_webhook_warnings_total",
    "Allowed-with-warning findings by reason code.",
    ["reason"],
)
POLICY_DRYRUN = Counter(
    "agentgroup_webhook_policy_dryrun_findings_total",
    "Violations of policies whose enforcementAction is dryrun (counted, never shown to the user).",
)
REVIEW_READS = Counter(
    "agentgroup_webhook_review_reads_total",
    "AdmissionReviews read, by path: fast (the typed decode of a usual review) or reference (anything "
    "else, read by the pydantic models, whose answer names every problem).",
    ["path"],
)
RUNTIME_LOOKUPS = Counter(
    "agentgroup_webhook_runtime_lookups_total",
    "Runtime references checked: found in the cache (cached), or by a direct GET on a cache miss "
    "(confirmed, not_found, error).",
    ["result"],
)
CERT_RELOADS = Counter(
    "agentgroup_webhook_certificate_reloads_total",
    "Attempts to load a changed serving certificate, by result (loaded, failed).",
    ["result"],
)
CERT_NOT_AFTER = Gauge(
    "agentgroup_webhook_certificate_not_after_seconds",
    "Expiry (Unix time) of the serving certificate in use.",
)
