"""Graph rules: cycles, order, dependents, descendants, roots and levels."""

from __future__ import annotations

import pytest

from agentdeck.core import dag
from agentdeck.core.errors import SpecError

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def chain(n: int) -> dict[str, list[str]]:
    return {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(n)}


def test_acyclic_graph_has_no_cycles() -> None:
    """A DAG reports no cycles."""
    assert dag.find_cycles(DIAMOND) == []


def test_cycle_is_named_from_its_smallest_key_following_needs() -> None:
    """A cycle reads start -> ... -> start along needs edges, from its smallest key."""
    graph = {"c": ["a"], "a": ["b"], "b": ["c"]}
    assert dag.find_cycles(graph) == [["a", "b", "c", "a"]]


def test_self_dependency_is_a_cycle_of_one() -> None:
    """A task needing itself is the cycle [key, key]."""
    assert dag.find_cycles({"a": ["a"], "b": []}) == [["a", "a"]]


def test_each_knot_gives_one_cycle_sorted_by_key() -> None:
    """Separate knots each give one cycle, sorted, whatever the input order."""
    graph = {"y": ["x"], "x": ["y"], "q": ["p"], "p": ["r"], "r": ["q"], "ok": ["x"]}
    assert dag.find_cycles(graph) == [["p", "r", "q", "p"], ["x", "y", "x"]]


def test_cycle_found_is_a_shortest_one_through_its_start() -> None:
    """Within a knot the named cycle is a shortest loop back to the start key."""
    graph = {"a": ["b", "c"], "b": ["c"], "c": ["a"]}
    assert dag.find_cycles(graph) == [["a", "c", "a"]]


def test_find_cycles_is_deterministic() -> None:
    """The same graph gives the same answer every time."""
    graph = {"b": ["c"], "c": ["b", "a"], "a": ["b"]}
    assert dag.find_cycles(graph) == dag.find_cycles(dict(reversed(graph.items())))


def test_needs_outside_the_graph_are_leaf_tasks() -> None:
    """A key only named in needs is treated as a task that needs nothing."""
    graph = {"b": ["a"]}
    assert dag.roots(graph) == ["a"]
    assert dag.topological_order(graph) == ["a", "b"]
    assert dag.dependents(graph) == {"b": [], "a": ["b"]}


def test_topological_order_puts_needs_first_and_keeps_graph_order() -> None:
    """Every task comes after what it needs; ties keep the order written."""
    assert dag.topological_order(DIAMOND) == ["a", "b", "c", "d"]
    assert dag.topological_order({"z": [], "y": [], "x": ["z"]}) == ["z", "y", "x"]


def test_topological_order_names_the_cycle() -> None:
    """Ordering a cyclic graph raises SpecError naming the cycle."""
    with pytest.raises(SpecError) as info:
        dag.topological_order({"a": ["b"], "b": ["a"], "c": []})
    assert info.value.problems == ["cycle: a -> b -> a"]


def test_dependents_are_the_reverse_edges_without_repeats() -> None:
    """dependents maps each key to the tasks that need it, once each."""
    assert dag.dependents({"a": [], "b": ["a", "a"], "c": ["a"]}) == {
        "a": ["b", "c"],
        "b": [],
        "c": [],
    }


def test_descendants_are_everything_downstream() -> None:
    """descendants holds every task transitively needing the key, not the key itself."""
    assert dag.descendants(DIAMOND, "a") == {"b", "c", "d"}
    assert dag.descendants(DIAMOND, "b") == {"d"}
    assert dag.descendants(DIAMOND, "d") == set()
    assert dag.descendants(DIAMOND, "unknown") == set()


def test_descendants_reuses_a_given_reverse_map() -> None:
    """A precomputed reverse map gives the same answer."""
    reverse = dag.dependents(DIAMOND)
    assert dag.descendants(DIAMOND, "a", reverse=reverse) == {"b", "c", "d"}


def test_descendants_terminate_on_a_cycle() -> None:
    """In a cycle, a key is its own descendant and the walk still ends."""
    assert dag.descendants({"a": ["b"], "b": ["a"]}, "a") == {"a", "b"}


def test_roots_need_nothing() -> None:
    """roots are the tasks ready at the start."""
    assert dag.roots(DIAMOND) == ["a"]
    assert dag.roots({"x": [], "y": ["x"], "z": []}) == ["x", "z"]


def test_levels_are_longest_distance_from_a_root() -> None:
    """A task's level is one more than the deepest task it needs."""
    graph = {**DIAMOND, "e": ["a", "d"]}
    assert dag.levels(graph) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}


def test_format_cycle_joins_with_arrows() -> None:
    """A cycle prints as a -> b -> a."""
    assert dag.format_cycle(["a", "b", "a"]) == "a -> b -> a"


def test_ten_thousand_node_chain_needs_no_recursion() -> None:
    """A 10,000-long chain is ordered, levelled and searched without hitting recursion limits."""
    graph = chain(10_000)
    assert dag.topological_order(graph)[-1] == "n9999"
    assert dag.levels(graph)["n9999"] == 9999
    assert len(dag.descendants(graph, "n0")) == 9999
    assert dag.find_cycles(graph) == []


def test_ten_thousand_node_cycle_is_found() -> None:
    """Closing a 10,000-long chain into a loop is reported as one cycle through every node."""
    graph = chain(10_000)
    graph["n0"] = ["n9999"]
    (cycle,) = dag.find_cycles(graph)
    assert len(cycle) == 10_001
    assert cycle[:3] == ["n0", "n9999", "n9998"]
