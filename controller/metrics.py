"""The controller's Prometheus metrics, with controller-runtime's names, labels and meanings, plus ours.

Dashboards and alerts written for controller-runtime operators (kubebuilder, Operator SDK) work as
they are: reconcile counts and latencies, work queue depth and latencies, leader status.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONTROLLER = "agentgroup"

# Exponential buckets from 10 ns to 1000 s, as client-go's work queue metrics use.
_QUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(12))
_RECONCILE_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    *(1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60),
)

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller",
    ["controller", "result"],
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ["controller"],
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=_RECONCILE_BUCKETS,
)
MAX_CONCURRENT = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ["controller"],
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ["controller"],
)

QUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue", ["name"])
QUEUE_ADDS = Counter("workqueue_adds_total", "Total number of adds handled by workqueue", ["name"])
QUEUE_LATENCY = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    ["name"],
    buckets=_QUEUE_BUCKETS,
)
WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    ["name"],
    buckets=_QUEUE_BUCKETS,
)
UNFINISHED_WORK = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has been done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads. One can deduce the number of stuck threads "
    "by observing the rate at which this increases.",
    ["name"],
)
LONGEST_RUNNING = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for workqueue been running.",
    ["name"],
)
QUEUE_RETRIES = Counter("workqueue_retries_total", "Total number of retries handled by workqueue", ["name"])

LEADER = Gauge(
    "leader_election_master_status",
    "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
    "1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
    ["name"],
)

GROUPS = Gauge("agentgroup_groups", "AgentGroups in the controller's cache, by status.phase", ["phase"])
SANDBOX_WRITES = Counter(
    "agentgroup_sandbox_writes_total",
    "Sandboxes and SandboxClaims the controller created or deleted, by verb",
    ["kind", "verb"],
)
STATUS_WRITES = Counter(
    "agentgroup_status_writes_total",
    "AgentGroup status patches, by why they were written (transition or progress)",
    ["change"],
)

# The policy audit (controller/audit.py), exported by the leader.
POLICY_VIOLATIONS = Gauge(
    "agentgroup_policy_violations",
    "Violations the latest policy audit found among existing AgentGroups, by policy and enforcement action",
    ["policy", "action"],
)
POLICY_AUDIT_DURATION = Histogram(
    "agentgroup_policy_audit_duration_seconds",
    "Time one policy audit takes: every AgentGroup against every policy, and the status writes",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
POLICY_AUDIT_LAST = Gauge(
    "agentgroup_policy_audit_last_run_timestamp_seconds",
    "Unix time the latest policy audit finished on this replica (0: none yet)",
)
POLICY_STATUS_WRITES = Counter(
    "agentgroup_policy_status_writes_total",
    "AgentGroupPolicy status patches, by why they were written (changed result, or refresh of an old one)",
    ["reason"],
)
