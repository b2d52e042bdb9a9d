"""Ordering tables so that referencing tables are emptied before the tables they reference."""

from __future__ import annotations

import graphlib
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

__all__ = ["order_steps"]

N = TypeVar("N", bound=Hashable)


def order_steps(nodes: Sequence[N], edges: Iterable[tuple[N, N]]) -> tuple[tuple[N, ...], ...]:
    """Order ``nodes`` so that for every edge ``(child, parent)`` child comes first.

    An edge means "child references parent": child's rows must go before parent's. The
    result is a sequence of steps; a step of more than one node is a strongly connected
    component (a reference cycle), whose members must be emptied together, in one
    statement. A self-reference does not make a step bigger. Deterministic: steps that are
    ready together, and the members of a step, keep the order of ``nodes``.

    ``graphlib.TopologicalSorter`` alone cannot do this: on any cycle, a self-reference
    included, it raises ``CycleError`` naming one cycle, and it has no notion of which
    nodes belong together. So the cycles are collapsed first (Tarjan's algorithm,
    iterative so deep chains cannot hit the recursion limit) and graphlib sorts the
    resulting acyclic graph of components.
    """
    position = {node: i for i, node in enumerate(nodes)}  # the work is done on positions
    successors: list[list[int]] = [[] for _ in nodes]
    pairs: list[tuple[int, int]] = []
    for child, parent in edges:
        if child not in position or parent not in position:
            raise ValueError(f"edge {child!r} -> {parent!r} names a node that is not listed")
        pairs.append((position[child], position[parent]))
        successors[position[child]].append(position[parent])

    components = [sorted(members) for members in _strongly_connected(len(nodes), successors)]
    component_of = [0] * len(nodes)
    for ci, members in enumerate(components):
        for member in members:
            component_of[member] = ci
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for ci in range(len(components)):
        sorter.add(ci)
    for c, p in pairs:
        if component_of[c] != component_of[p]:
            sorter.add(component_of[p], component_of[c])  # the referenced after the referencing
    sorter.prepare()
    steps: list[tuple[N, ...]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda ci: components[ci][0])
        steps.extend(tuple(nodes[i] for i in components[ci]) for ci in ready)
        sorter.done(*ready)
    return tuple(steps)


def _strongly_connected(count: int, successors: Sequence[list[int]]) -> list[list[int]]:
    """Tarjan's strongly connected components of nodes 0..count-1, without recursion."""
    index = [-1] * count
    low = [0] * count
    on_stack = [False] * count
    stack: list[int] = []
    result: list[list[int]] = []
    counter = 0
    for root in range(count):
        if index[root] >= 0:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work = [(root, iter(successors[root]))]
        while work:
            node, pending = work[-1]
            for nxt in pending:
                if index[nxt] < 0:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack[nxt] = True
                    work.append((nxt, iter(successors[nxt])))
                    break
                if on_stack[nxt]:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    caller = work[-1][0]
                    low[caller] = min(low[caller], low[node])
                if low[node] == index[node]:
                    members: list[int] = []
                    while True:
                        member = stack.pop()
                        on_stack[member] = False
                        members.append(member)
                        if member == node:
                            break
                    result.append(members)
    return result
