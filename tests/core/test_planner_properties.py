"""Properties of the planner over random dependency graphs, replica counts and readiness orders."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.graph import prerequisites
from shared.status import Change
from tests.controller.objects import World, agent, code_interpreter, group_obj
from tests.core.strategies import PROPERTY, dags

Graph = tuple[list[str], list[tuple[str, str]]]


def _world(graph: Graph, replicas: list[int]) -> World:
    nodes, edges = graph
    agents = [agent(n, replicas=replicas[i % len(replicas)]) for i, n in enumerate(nodes)]
    return World(group_obj(agents, edges), [code_interpreter()])


@PROPERTY
@given(dags(max_nodes=12), st.lists(st.integers(1, 3), min_size=1, max_size=4), st.data())
def test_any_dag_starts_in_order_and_ends_running(
    graph: Graph, replicas: list[int], data: st.DataObject
) -> None:
    nodes, edges = graph
    w = _world(graph, replicas)
    pre = prerequisites(nodes, edges)
    for _ in range(200):
        p = w.step()
        for create in p.creates:
            labels = create.body["metadata"]["labels"]
            for dep in pre[labels["runtime.agentcube.io/agent-name"]]:
                assert w.agent(dep)["phase"] == "Ready", (
                    f"{create.body['metadata']['name']} started before {dep}"
                )
        if w.phase == "Running":
            break
        # agent-sandbox makes some of the waiting Sandboxes Ready, in any order.
        waiting = [n for n, s in w.sandboxes.items() if not s.get("status")]
        if waiting:
            w.mark_ready(*data.draw(st.lists(st.sampled_from(waiting), min_size=1, unique=True)))
    assert w.phase == "Running"
    assert len(w.created) == len(set(w.created)) == w.status["totalAgents"]
    assert w.status_changes.count(Change.TRANSITION) == 2


@PROPERTY
@given(dags(max_nodes=8), st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(0, 10))
def test_a_plan_carried_out_asks_for_nothing_more(
    graph: Graph, replicas: list[int], ready_steps: int
) -> None:
    w = _world(graph, replicas)
    for _ in range(ready_steps):
        w.step()
        w.mark_ready()
    w.step()
    again = w.plan()
    assert again.creates == ()
    assert again.deletes == ()
    assert again.annotations is None
    assert again.status == w.typed.status


@PROPERTY
@given(
    dags(max_nodes=6),
    st.sampled_from(["FailFast", "RetrySubAgent", "ContinueDegraded"]),
    st.booleans(),
    st.data(),
)
def test_after_a_loss_every_policy_settles(
    graph: Graph, policy: str, gone: bool, data: st.DataObject
) -> None:
    nodes, edges = graph
    w = World(group_obj([agent(n) for n in nodes], edges, policy=policy), [code_interpreter()])
    w.run_until_running()
    victim = data.draw(st.sampled_from(sorted(w.sandboxes)))
    if gone:
        w.lose(victim)
    else:
        w.mark_ready(victim, ready=False)
    w.step()
    again = w.plan()
    assert again.creates == ()
    assert again.deletes == ()
    assert again.status == w.typed.status
    expected = {"FailFast": "Failed", "RetrySubAgent": "Running", "ContinueDegraded": "Running"}[policy]
    assert w.phase == expected
    assert w.condition("Degraded")["status"] == "True"
