"""The dependency graph: cycles are found and named truthfully, DAGs pass, start-up order follows edges."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from shared.findings import Reason
from shared.graph import find_cycle, prerequisites, waiting_for
from shared.rules import validate
from tests.core.strategies import PROPERTY, dags, group

PREFIX = "the dependencies contain the cycle "


def adjacency(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, list[str]]:
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    return succ


def reported_cycle(verdict_message: str) -> list[str]:
    assert verdict_message.startswith(PREFIX)
    return verdict_message.removeprefix(PREFIX).split(";")[0].split(" -> ")


@PROPERTY
@given(dags())
def test_random_dags_are_accepted(dag: tuple[list[str], list[tuple[str, str]]]) -> None:
    nodes, edges = dag

    verdict = validate(group(nodes, edges))

    assert verdict.allowed, verdict.message
    assert find_cycle(adjacency(nodes, edges)) is None


@PROPERTY
@given(dags(min_nodes=2), st.data())
def test_an_injected_cycle_is_rejected_and_the_reported_cycle_is_real(
    dag: tuple[list[str], list[tuple[str, str]]], data: st.DataObject
) -> None:
    nodes, edges = dag
    # A cycle through 2+ distinct nodes, added as edges in random positions among the others.
    ring = data.draw(st.lists(st.sampled_from(nodes), min_size=2, unique=True), label="ring")
    injected = [(a, b) for a, b in zip(ring, [*ring[1:], ring[0]], strict=True)]
    all_edges = data.draw(st.permutations(edges + injected), label="edges")

    verdict = validate(group(nodes, all_edges))

    cycles = [v for v in verdict.violations if v.reason == Reason.DEPENDENCY_CYCLE]
    assert [c.field for c in cycles] == ["spec.dependencies"]
    path = reported_cycle(cycles[0].message)
    assert len(path) >= 3
    assert path[0] == path[-1]
    assert len(set(path[:-1])) == len(path) - 1, "a simple cycle visits each agent once"
    edge_set = set(all_edges)
    assert all(pair in edge_set for pair in itertools.pairwise(path))


def test_one_self_contained_cycle_is_named_in_order() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


def test_a_long_chain_needs_no_recursion() -> None:
    nodes = [f"n{i}" for i in range(20_000)]
    chain = list(itertools.pairwise(nodes))

    assert find_cycle(adjacency(nodes, chain)) is None
    assert find_cycle(adjacency(nodes, [*chain, (nodes[-1], nodes[0])])) == [*nodes, nodes[0]]


def test_a_cycle_is_found_past_explored_branches() -> None:
    succ = {"a": ["b", "c"], "b": ["d"], "c": ["d", "e"], "d": [], "e": ["c"]}

    assert find_cycle(succ) == ["c", "e", "c"]


def test_prerequisites_and_what_each_agent_waits_for() -> None:
    nodes = ["planner", "coder", "tester", "reviewer"]
    edges = [("planner", "coder"), ("planner", "tester"), ("coder", "reviewer"), ("tester", "reviewer")]

    pre = prerequisites(nodes, [*edges, ("planner", "coder")])

    assert pre == {
        "planner": [],
        "coder": ["planner"],
        "tester": ["planner"],
        "reviewer": ["coder", "tester"],
    }
    assert waiting_for(pre, ready={"planner", "coder"}) == {
        "planner": [],
        "coder": [],
        "tester": [],
        "reviewer": ["tester"],
    }
