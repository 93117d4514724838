"""Hypothesis strategies for groups, names and dependency graphs, shared by the core property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from shared.models import API_VERSION, KIND

# Shared CPUs: no per-example deadline (speed is measured in bench/, not asserted here).
PROPERTY = settings(deadline=None, max_examples=150)

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

# A DNS-1123 label: what an agent name that passes validation looks like.
labels = st.builds(
    lambda first, middle, last: (first + middle + last)[:63].rstrip("-") or first,
    st.sampled_from(_ALNUM),
    st.text(_ALNUM + "-", max_size=70),
    st.text(_ALNUM, max_size=1),
)

# A DNS-1123 subdomain: what a group (object) name may be.
subdomains = st.lists(labels, min_size=1, max_size=5).map(".".join).map(lambda s: s[:253].rstrip("-."))

replica_indices = st.integers(min_value=0, max_value=2**31 - 1)


def group(agents: list[str], edges: list[tuple[str, str]] | None = None, **spec: Any) -> dict[str, Any]:
    """A raw AgentGroup object, as read from YAML: one AgentRuntime agent per name."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "g", "namespace": "team-a"},
        "spec": {
            "agents": [{"name": a, "runtimeRef": {"kind": "AgentRuntime", "name": "rt"}} for a in agents],
            "dependencies": [{"from": a, "to": b} for a, b in edges or ()],
            **spec,
        },
    }


@st.composite
def dags(draw: st.DrawFn, min_nodes: int = 1, max_nodes: int = 30) -> tuple[list[str], list[tuple[str, str]]]:
    """Node names and edges that only go from a lower to a higher position: never a cycle."""
    n = draw(st.integers(min_value=min_nodes, max_value=max_nodes))
    nodes = [f"a{i}" for i in draw(st.permutations(range(n)))]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=3 * n)) if pairs else []
    return nodes, [(nodes[i], nodes[j]) for i, j in chosen]
