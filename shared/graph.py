"""The dependency graph of a group: cycle detection and start-up order, linear in agents plus edges."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

Edge = tuple[str, str]


def adjacency(nodes: Iterable[str], edges: Iterable[Edge]) -> dict[str, list[str]]:
    """Successor lists in input order; edges naming unknown nodes are ignored."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in succ and b in succ:
            succ[a].append(b)
    return succ


def find_cycle(succ: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a closed path ``[a, b, c, a]``, or None for a DAG.

    Iterative depth-first search with three colours, so deep chains do not hit the recursion limit.
    The search starts from nodes in input order, which makes the reported cycle deterministic.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(succ, white)
    for root in succ:
        if colour[root] != white:
            continue
        path = [root]
        iters = [iter(succ[root])]
        colour[root] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
            elif colour[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            elif colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(succ[nxt]))
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
