"""How fast the admission rules are, and that their cost grows linearly with the group.

Validates raw AgentGroups of 10 to 10,000 agents with random dependency edges (2 per agent on
average, from a lower to a higher index, so the graph is a DAG and the whole graph is searched):

- full: ``validate(raw dict)``, what the webhook does per request: parse with pydantic, every rule,
  the RuntimeNotFound lookup and one policy;
- full, GC paused: the same with Python's cyclic garbage collector paused while it runs (as ``timeit``
  measures by default): the parse allocates a tree of objects without cycles, which reference
  counting frees, but the collector walks it, and on CPython 3.11 its full collections come more
  often the more a call allocates, so the default figure grows faster than the work;
- rules: ``validate_group(parsed group)``, the same without the parse.

Prints validations per second and how the time per validation grows per 10x more agents: about 10
means linear; CPU caches add a little at 10,000 agents. Run: ``.venv/bin/python -m bench.validate``.
"""

from __future__ import annotations

import gc
import itertools
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from shared.models import API_VERSION, KIND, RUNTIME_KINDS
from shared.policy import AgentGroupPolicy
from shared.rules import RuntimeKey, parse, validate, validate_group

SIZES = (10, 100, 1_000, 10_000)
EDGES_PER_AGENT = 2
MIN_SECONDS = 1.0  # of CPU time per measurement
ROUNDS = 5  # best of, to see through noise from other processes
RUNTIMES: set[RuntimeKey] = {(kind, f"rt-{i}") for i, kind in enumerate(RUNTIME_KINDS)}
POLICY = AgentGroupPolicy.model_validate(
    {
        "metadata": {"name": "bench"},
        "spec": {"maxAgents": 100_000, "maxSandboxes": 100_000, "requiredLabels": [{"key": "team"}]},
    }
)


def group(n: int, rng: random.Random) -> dict[str, Any]:
    names = [f"agent-{i}" for i in range(n)]
    edges: set[tuple[int, int]] = set()
    while len(edges) < min(EDGES_PER_AGENT * n, n * (n - 1) // 2):
        a = rng.randrange(n - 1)
        edges.add((a, rng.randrange(a + 1, n)))
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": f"bench-{n}", "namespace": "bench", "labels": {"team": "bench"}},
        "spec": {
            "agents": [
                {"name": name, "runtimeRef": {"kind": RUNTIME_KINDS[i % 2], "name": f"rt-{i % 2}"}}
                for i, name in enumerate(names)
            ],
            "dependencies": [{"from": names[a], "to": names[b]} for a, b in sorted(edges)],
        },
    }


def seconds_per_call(fn: Callable[[], object]) -> float:
    """CPU seconds per call: the CPUs are shared, and time spent waiting for one is not ours."""
    best = float("inf")
    for _ in range(ROUNDS):
        count, start = 0, time.process_time()
        while (elapsed := time.process_time() - start) < MIN_SECONDS / ROUNDS or count == 0:
            fn()
            count += 1
        best = min(best, elapsed / count)
    return best


def gc_paused(fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        gc.disable()
        try:
            return fn()
        finally:
            gc.enable()

    return call


def growth(times: list[float]) -> str:
    pairs = itertools.pairwise(zip(SIZES, times, strict=True))
    return "  ".join(f"{b:,}/{a:,}: {tb / ta:.1f}x" for (a, ta), (b, tb) in pairs)


def main() -> None:
    rng = random.Random(20261129)
    print(
        f"AgentGroup validation, CPU time, best of {ROUNDS}; full = parse + rules + runtime lookup + 1 policy"
    )
    print(
        f"{'agents':>7} {'edges':>7} {'validations/s':>14} {'ms/validation':>14}"
        f" {'us/agent full':>14} {'full, GC paused':>16} {'us/agent rules':>15}"
    )
    full, paused, rules = [], [], []
    for n in SIZES:
        obj = group(n, rng)
        parsed, problems = parse(obj)
        verdict = validate(obj, runtimes=RUNTIMES, policies=[POLICY])
        if parsed is None or problems or verdict.violations or verdict.warnings:
            raise SystemExit(f"the benchmark group must be clean to take the full path:\n{verdict.message}")
        full_call = partial(validate, obj, runtimes=RUNTIMES, policies=[POLICY])
        full.append(seconds_per_call(full_call))
        paused.append(seconds_per_call(gc_paused(full_call)))
        rules.append(seconds_per_call(partial(validate_group, parsed, runtimes=RUNTIMES, policies=[POLICY])))
        edges = len(obj["spec"]["dependencies"])
        print(
            f"{n:>7,} {edges:>7,} {1 / full[-1]:>14,.1f} {full[-1] * 1e3:>14.3f}"
            f" {full[-1] / n * 1e6:>14.2f} {paused[-1] / n * 1e6:>16.2f} {rules[-1] / n * 1e6:>15.2f}"
        )
    print("time per validation per 10x more agents (10 = linear):")
    print(f"  full:            {growth(full)}")
    print(f"  full, GC paused: {growth(paused)}")
    print(f"  rules:           {growth(rules)}")


if __name__ == "__main__":
    main()
