"""The dependency graph of a group: cycle detection and start-up order, linear in agents plus edges."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

Edge = tuple[str, str]


def find_cycle(succ: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a closed path ``[a, b, c, a]``, or None for a DAG.

    Iterative depth-first search, so deep chains do not hit the recursion limit: ``path`` holds the
    nodes being explored, ``todo`` their successor iterators (a for loop resumes one where it stopped).
    The search starts from nodes in input order, which makes the reported cycle deterministic.
    """
    on_path, done = 1, 2
    state: dict[str, int] = {}
    for root in succ:
        if root in state:
            continue
        state[root] = on_path
        path = [root]
        todo = [iter(succ[root])]
        while todo:
            for nxt in todo[-1]:
                seen = state.get(nxt)
                if seen is None:
                    state[nxt] = on_path
                    path.append(nxt)
                    todo.append(iter(succ[nxt]))
                    break
                if seen == on_path:
                    return [*path[path.index(nxt) :], nxt]
            else:  # every successor explored
                state[path.pop()] = done
                todo.pop()
    return None


def prerequisites(nodes: Iterable[str], edges: Iterable[Edge]) -> dict[str, list[str]]:
    """For each node, the nodes that must be Ready before it starts (edge ``from -> to``)."""
    pre: dict[str, dict[str, None]] = {n: {} for n in nodes}  # dicts as ordered sets
    for a, b in edges:
        if a in pre and b in pre:
            pre[b][a] = None
    return {n: list(deps) for n, deps in pre.items()}


def waiting_for(pre: Mapping[str, Sequence[str]], ready: Collection[str]) -> dict[str, list[str]]:
    """For each node, the prerequisites that are not Ready yet; an empty list means it may start."""
    return {n: [p for p in deps if p not in ready] for n, deps in pre.items()}
