"""Pure functions over a task graph.

A graph maps each task key to the keys it *needs* (its dependencies)::

    {"fetch": [], "parse": ["fetch"], "store": ["parse"]}

Edges point from a task to what it needs. Keys named in ``needs`` but absent from the mapping
are treated as tasks with no needs of their own. Every function here is iterative, so graphs of
tens of thousands of tasks never hit Python's recursion limit, and deterministic: results follow
the graph's insertion order, or sorted key order where a set would otherwise leak.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from agentdeck.core.errors import SpecError

Graph = Mapping[str, Sequence[str]]
"""Task key -> keys of the tasks it needs."""


def _nodes(graph: Graph) -> list[str]:
    """Every key in the graph, then every key only named in ``needs``, in first-seen order."""
    seen = dict.fromkeys(graph)
    for needs in graph.values():
        for need in needs:
            seen.setdefault(need)
    return list(seen)


def dependents(graph: Graph) -> dict[str, list[str]]:
    """The reverse edges: for every key, the tasks that need it (in graph order, no repeats)."""
    reverse: dict[str, list[str]] = {key: [] for key in _nodes(graph)}
    for key, needs in graph.items():
        for need in dict.fromkeys(needs):
            reverse[need].append(key)
    return reverse


def roots(graph: Graph) -> list[str]:
    """The tasks that need nothing: ready as soon as the workflow starts."""
    return [key for key in _nodes(graph) if not graph.get(key)]


def descendants(
    graph: Graph, key: str, *, reverse: Mapping[str, Sequence[str]] | None = None
) -> set[str]:
    """Every task transitively downstream of ``key`` (not ``key`` itself, unless in a cycle).

    These are the tasks to skip when ``key`` fails. Pass ``reverse`` (from :func:`dependents`)
    to reuse it across many calls on the same graph.
    """
    reverse = dependents(graph) if reverse is None else reverse
    found: set[str] = set()
    queue = deque(reverse.get(key, ()))
    while queue:
        node = queue.popleft()
        if node in found:
            continue
        found.add(node)
        queue.extend(reverse.get(node, ()))
    return found


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components, written with an explicit stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in _nodes(graph):
        if start in index:
            continue
        # Each frame is (node, iterator over the nodes it needs).
        work: list[tuple[str, Iterable[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(graph.get(start, ()))))
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, ()))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _cycle_through(graph: Graph, start: str, members: set[str]) -> list[str]:
    """A shortest cycle from ``start`` back to itself using only edges inside ``members``."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for need in graph.get(node, ()):
            if need == start:
                back: list[str] = []
                while node != start:
                    back.append(node)
                    node = previous[node]
                return [start, *reversed(back), start]
            if need in members and need not in previous:
                previous[need] = node
                queue.append(need)
    raise AssertionError(f"no cycle through {start!r}")  # pragma: no cover - SCC guarantees one


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle per knot of mutually dependent tasks, e.g. ``[["a", "b", "c", "a"]]``.

    Each cycle starts and ends at the smallest key of its knot and follows ``needs`` edges
    (``a`` needs ``b`` needs ``c`` needs ``a``); cycles are sorted by that key. A task that
    needs itself is the cycle ``[key, key]``. An acyclic graph gives ``[]``.
    """
    cycles: list[list[str]] = []
    for component in _strongly_connected(graph):
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        cycles.append(_cycle_through(graph, start, set(component)))
    cycles.sort(key=lambda cycle: cycle[0])
    return cycles


def format_cycle(cycle: Sequence[str]) -> str:
    """A cycle as people read it: ``a -> b -> c -> a``."""
    return " -> ".join(cycle)


def topological_order(graph: Graph) -> list[str]:
    """Every key, each after all the keys it needs; ties keep graph order.

    Raises :class:`core.errors.SpecError` naming every cycle when there is one.
    """
    nodes = _nodes(graph)
    reverse = dependents(graph)
    waiting = {key: len(set(graph.get(key, ()))) for key in nodes}
    queue = deque(key for key in nodes if waiting[key] == 0)
    order: list[str] = []
    while queue:
        key = queue.popleft()
        order.append(key)
        for dependent in reverse[key]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                queue.append(dependent)
    if len(order) < len(nodes):
        raise SpecError([f"cycle: {format_cycle(c)}" for c in find_cycles(graph)])
    return order


def levels(graph: Graph) -> dict[str, int]:
    """Each key's depth: 0 for roots, else one more than the deepest task it needs.

    Tasks of one level can run side by side; the UI draws a DAG one column per level.
    Raises :class:`core.errors.SpecError` on a cycle.
    """
    depth: dict[str, int] = {}
    for key in topological_order(graph):
        depth[key] = 1 + max((depth[need] for need in graph.get(key, ())), default=-1)
    return depth
