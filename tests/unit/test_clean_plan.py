"""The clean plan: ordering properties on random foreign-key graphs (cycles included),
then the same graphs as real tables, filled and reset on PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from testdb import clean
from testdb.clean import Table, make_plan, order_steps


@st.composite
def graphs(draw: st.DrawFn, max_nodes: int = 12) -> tuple[list[int], list[tuple[int, int]]]:
    """Nodes in a random order and random edges (child, parent): self-loops, cycles, repeats."""
    n = draw(st.integers(0, max_nodes))
    nodes = draw(st.permutations(list(range(n))))
    if n == 0:
        return nodes, []
    node = st.integers(0, n - 1)
    edges = draw(st.lists(st.tuples(node, node), max_size=3 * n))
    return nodes, edges


def _reachable(nodes: list[int], edges: list[tuple[int, int]]) -> dict[int, set[int]]:
    succ: dict[int, set[int]] = {v: set() for v in nodes}
    for a, b in edges:
        succ[a].add(b)
    reach: dict[int, set[int]] = {}
    for start in nodes:
        seen: set[int] = set()
        todo = [start]
        while todo:
            for nxt in succ[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    return reach


@given(graphs())
def test_every_node_appears_exactly_once(graph: tuple[list[int], list[tuple[int, int]]]) -> None:
    nodes, edges = graph
    steps = order_steps(nodes, edges)
    flat = [n for step in steps for n in step]
    assert sorted(flat) == sorted(nodes)
    assert all(steps)


@given(graphs())
def test_referencing_step_comes_before_referenced_step(
    graph: tuple[list[int], list[tuple[int, int]]],
) -> None:
    nodes, edges = graph
    step_of = {n: i for i, step in enumerate(order_steps(nodes, edges)) for n in step}
    for child, parent in edges:
        if step_of[child] != step_of[parent]:
            assert step_of[child] < step_of[parent]


@given(graphs())
def test_steps_are_exactly_the_cycles(graph: tuple[list[int], list[tuple[int, int]]]) -> None:
    """Two nodes share a step if and only if each reaches the other."""
    nodes, edges = graph
    reach = _reachable(nodes, edges)
    step_of = {n: i for i, step in enumerate(order_steps(nodes, edges)) for n in step}
    for a, b in itertools.combinations(nodes, 2):
        assert (step_of[a] == step_of[b]) == (b in reach[a] and a in reach[b])


@given(graphs())
def test_order_is_deterministic_and_keeps_input_order_within_a_step(
    graph: tuple[list[int], list[tuple[int, int]]],
) -> None:
    nodes, edges = graph
    steps = order_steps(nodes, edges)
    assert steps == order_steps(list(nodes), list(reversed(edges)))
    position = {n: i for i, n in enumerate(nodes)}
    for step in steps:
        assert list(step) == sorted(step, key=position.__getitem__)


def test_order_handles_a_long_chain_without_recursion() -> None:
    nodes = list(range(5000))
    steps = order_steps(nodes, [(i + 1, i) for i in range(4999)])
    assert [s[0] for s in steps] == list(reversed(nodes))


def test_edge_to_an_unlisted_node_is_rejected() -> None:
    with pytest.raises(ValueError, match="not listed"):
        order_steps([1], [(1, 2)])


def _tables(n: int) -> list[Table]:
    return [Table("s", f"t{i}") for i in range(n)]


@given(graphs(max_nodes=9), st.data())
def test_plan_referencers_and_truncatable_follow_the_edges(
    graph: tuple[list[int], list[tuple[int, int]]], data: st.DataObject
) -> None:
    nodes, edges = graph
    tables = _tables(len(nodes))
    kept = data.draw(st.sets(st.sampled_from(tables))) if tables else set()
    table_edges = [(tables[a], tables[b]) for a, b in edges]
    plan = make_plan(tables, table_edges, keep=[t.name for t in kept])
    cleaned = [t for t in tables if t not in kept]
    assert sorted(plan.tables) == sorted(cleaned)
    inner = [(a, b) for a, b in table_edges if a not in kept and b not in kept]
    external = {b for a, b in table_edges if a in kept and b not in kept}
    assert plan.external == external
    index = {t: i for i, t in enumerate(cleaned)}
    step_of = {t: i for i, step in enumerate(plan.steps) for t in step}
    reach = _reachable(list(range(len(cleaned))), [(index[a], index[b]) for a, b in inner])
    for table in cleaned:
        expected = {table} | {t for t in cleaned if index[table] in reach[index[t]]}
        assert set(plan.referencers[table]) == expected
        # what a TRUNCATE of the table must name comes no later in the order
        assert all(
            step_of[r] < step_of[table] or r == table or step_of[r] == step_of[table] for r in expected
        )
        assert (table in plan.truncatable) == (not expected & external)
        assert plan.caps[table] >= 1


def test_caps_grow_with_referencers_and_shrink_with_references() -> None:
    a, b, c = _tables(3)
    plan = make_plan([a, b, c], [(b, a), (c, a)], truncate_us=5000.0)
    assert plan.caps[b] == plan.caps[c] == 1000  # 1 table * 5000 us / 5 us per row
    assert plan.caps[a] == 600  # 3 tables * 5000 us / (5 + 2 * 10) us per row


def test_table_display_quotes_only_what_needs_quoting() -> None:
    assert Table("public", "orders").display == "public.orders"
    assert Table("Billing", 'Order "Items"').display == '"Billing"."Order ""Items"""'


def test_keep_entries_match_name_or_schema_dot_name() -> None:
    table = Table("billing", "currencies")
    assert table.matches("currencies")
    assert table.matches("billing.currencies")
    assert not table.matches("public.currencies")


def test_fingerprint_changes_with_the_schema() -> None:
    a, b = _tables(2)
    assert make_plan([a, b], []).fingerprint == make_plan([a, b], []).fingerprint
    assert make_plan([a, b], []).fingerprint != make_plan([a, b], [(a, b)]).fingerprint


# --- the same graphs as real tables ------------------------------------------------------------

ACTIONS = ["NO ACTION", "RESTRICT", "CASCADE", "SET NULL"]


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    """Tables t0..tn-1, each with 1-3 rows, and foreign keys with random nullability,
    deferrability and ON DELETE action (SET NULL only on nullable columns)."""
    n = draw(st.integers(1, 6))
    node = st.integers(0, n - 1)
    fks = []
    for child, parent in draw(st.lists(st.tuples(node, node), max_size=2 * n)):
        nullable = draw(st.booleans())
        action = draw(st.sampled_from(ACTIONS if nullable else ACTIONS[:3]))
        fks.append(
            {
                "child": child,
                "parent": parent,
                "nullable": nullable,
                "action": action,
                "deferrable": draw(st.booleans()),
            }
        )
    rows = [draw(st.integers(1, 3)) for _ in range(n)]
    return {
        "n": n,
        "fks": fks,
        "rows": rows,
        "strategy": draw(st.sampled_from(clean.STRATEGIES)),
        "cheap_truncate": draw(st.booleans()),
        "skip_fk_checks": draw(st.sampled_from([None, True, False])),
    }


@pytest.fixture
def pg(scratch_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        yield conn


_examples = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schemas())
def test_reset_empties_random_schemas_without_fk_errors(
    pg: psycopg.Connection[Any], schema: dict[str, Any]
) -> None:
    ns = f"prop_{next(_examples)}"
    table = [sql.Identifier(ns, f"t{i}") for i in range(schema["n"])]
    columns: list[list[sql.Composable]] = [[sql.SQL("id int PRIMARY KEY")] for _ in table]
    values: list[list[sql.Composable]] = [[sql.SQL("g")] for _ in table]
    constraints: list[sql.Composed] = []
    for k, fk in enumerate(schema["fks"]):
        column = sql.Identifier(f"f{k}")
        columns[fk["child"]].append(
            sql.SQL("{} int {}").format(column, sql.SQL("" if fk["nullable"] else "NOT NULL"))
        )
        constraints.append(
            sql.SQL("ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {} ON DELETE {} {}").format(
                table[fk["child"]],
                column,
                table[fk["parent"]],
                sql.SQL(fk["action"]),
                sql.SQL("DEFERRABLE" if fk["deferrable"] else ""),
            )
        )
        # row g points at row ((g - 1) % rows(parent)) + 1 of the parent, which exists
        values[fk["child"]].append(
            sql.SQL("(g - 1) % {} + 1").format(sql.Literal(schema["rows"][fk["parent"]]))
        )
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(ns)))
    try:
        for i, t in enumerate(table):
            pg.execute(sql.SQL("CREATE TABLE {} ({})").format(t, sql.SQL(", ").join(columns[i])))
        for constraint in constraints:
            pg.execute(constraint)
        # Every row in ONE statement: foreign keys are checked at its end, so any graph of
        # NOT NULL, non-deferrable keys -- cycles included -- can be filled.
        inserts = [
            sql.SQL("INSERT INTO {} SELECT {} FROM generate_series(1, {}) AS g").format(
                t, sql.SQL(", ").join(values[i]), sql.Literal(schema["rows"][i])
            )
            for i, t in enumerate(table)
        ]
        ctes = [sql.SQL("i{} AS ({})").format(sql.Literal(i), q) for i, q in enumerate(inserts[:-1])]
        fill = sql.SQL("WITH {} {}").format(sql.SQL(", ").join(ctes), inserts[-1]) if ctes else inserts[-1]
        pg.execute(fill)

        plan = clean.load_plan(pg, [])
        if schema["cheap_truncate"]:
            plan = dataclasses.replace(plan, truncate_us=0.001)  # auto truncates whatever has rows
        report = clean.reset(
            pg,
            plan,
            schema["strategy"],
            reset_sequences=True,
            lock_timeout=5,
            skip_fk_checks=schema["skip_fk_checks"],
        )

        counts = [pg.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone() for t in table]
        assert counts == [(0,)] * len(table)
        assert report.tables == len(table)
        if schema["strategy"] == "delete":
            assert report.rows == sum(schema["rows"])
    finally:
        pg.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(ns)))
