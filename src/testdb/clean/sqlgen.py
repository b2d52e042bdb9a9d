"""Generating the reset function: PL/pgSQL that empties a plan's tables in one call.

Every identifier is composed with :mod:`psycopg.sql`; no table name is ever formatted into
SQL as plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from testdb.clean.catalog import MARK_SQL
from testdb.clean.plan import (
    AUTO_TRUNCATE_LOCK_MS,
    MIN_ROW_BYTES,
    TRUNCATE_COUNT_CAP,
    CleanPlan,
    Strategy,
    Table,
)

__all__ = ["NO_SKIP_SQLSTATE", "Rendered", "render"]

#: The SQLSTATE the reset raises, before deleting anything, when a table holding rows
#: carries user triggers this role has no way to keep from firing (see plan.py).
NO_SKIP_SQLSTATE = "TDB01"

_Piece = tuple[sql.Composable, tuple["Table", ...]]  # code, and the tables it touches


@dataclass
class Rendered:
    text: str
    lines: list[tuple[int, tuple[Table, ...]]]  # (first line, tables) of each step's code


# --- generating the PL/pgSQL ----------------------------------------------------------------

_HEAD = """DECLARE
  {params}v_f boolean[];
  v_steps integer[];
  v_i integer;
  v_n bigint;
  v_s bigint[];
  v_done integer[] := '{{}}';
  v_rows bigint[] := '{{}}';
  v_trunc integer[] := '{{}}';
  v_tr integer[] := '{{}}';
  v_exact boolean := true;
  v_srr text;
BEGIN
  IF {mark} IS DISTINCT FROM p_mark THEN
    {stale}
  END IF;
  -- No lock is waited for longer than this. The commit does not wait for its WAL to reach
  -- the disk: in a server crash the emptying could be lost, never consistency (and on a
  -- disk with a slow fsync that wait is most of a small reset).
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true),
          pg_catalog.set_config('synchronous_commit', 'off', true);"""


def render(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy,
    do_args: tuple[bool, int, str, bool] | None = None,
) -> Rendered:
    """The PL/pgSQL body of the reset function (or of a DO block, given ``do_args``).

    Also returns the first line of each piece of code with the tables it touches, so that
    the line number in an error's context tells which table a lock was waited for.
    """

    def give(value: sql.Composable) -> sql.Composable:
        if do_args is None:
            return sql.SQL("RETURN {};").format(value)
        return sql.SQL("PERFORM pg_catalog.set_config('testdb.clean_report', {}, true); RETURN;").format(
            value
        )

    params: sql.Composable = sql.SQL("")
    if do_args is not None:
        params = sql.SQL(
            "p_reset boolean := {}; p_lock_timeout_ms integer := {}; p_mark text := {};"
            " p_replica boolean := {};\n  "
        ).format(*(sql.Literal(a) for a in do_args))
    chunks: list[_Piece] = [
        (
            sql.SQL(_HEAD).format(
                params=params, mark=sql.SQL(MARK_SQL), stale=give(sql.Literal('{"stale": true}'))
            ),
            (),
        ),
        *_Gen(conn, plan).steps(strategy),
    ]
    if plan.sequences:
        # setval, not ALTER SEQUENCE … RESTART: it needs only UPDATE on the sequence and
        # takes no lock that a session's open nextval() holds (ALTER SEQUENCE would wait for
        # every transaction that inserted a row). setval is not transactional, so it runs
        # last, once every table is empty.
        seqs = sorted({s for t in plan.tables for s in plan.sequences.get(t, ())})
        chunks.append(
            (
                sql.SQL(
                    "  IF p_reset THEN\n"
                    "    PERFORM pg_catalog.setval(s.seqrelid, s.seqstart, false)\n"
                    "    FROM pg_catalog.pg_sequence AS s\n"
                    "    WHERE s.seqrelid = ANY ({}::pg_catalog.oid[])\n"
                    "      AND pg_catalog.pg_sequence_last_value(s.seqrelid) IS NOT NULL;\n"
                    "  END IF;"
                ).format(sql.Literal("{" + ",".join(map(str, seqs)) + "}")),
                (),
            )
        )
    report = sql.SQL(
        "pg_catalog.json_build_object('emptied', v_done, 'rows', v_rows,"
        " 'truncated', v_trunc, 'exact', v_exact,"
        " 'replica', pg_catalog.current_setting('session_replication_role') = 'replica')::text"
    )
    chunks.append((sql.SQL("  {}\nEND").format(give(report)), ()))

    texts: list[str] = []
    lines: list[tuple[int, tuple[Table, ...]]] = []
    line = 1
    for code, tables in chunks:
        text = code.as_string(conn)
        if tables:
            lines.append((line, tables))
        texts.append(text)
        line += text.count("\n") + 1
    return Rendered("\n".join(texts), lines)


class _Gen:
    """PL/pgSQL for one plan.

    The reset first probes every table in ONE statement,
    ``SELECT ARRAY[EXISTS (SELECT FROM ONLY t1), …] INTO v_f`` (one executor run, planned
    once per session; cheaper than one probe statement per table, than ``pg_relation_size``
    per table -- which opens and locks each table too -- and than a UNION ALL of ``LIMIT 1``
    scans: docs/benchmarks.md), turns the flags into the sorted list of steps holding rows, and
    loops over that list. Each iteration finds its step's code through a binary tree of
    ``IF v_i <= pivot`` (about log2(steps) tests), so a reset of 300 tables of which 5 hold
    rows runs ~50 PL/pgSQL statements besides the probe, not 300 ``IF``s (~0.5 ms).

    Why a cycle needs no special care: PostgreSQL checks NO ACTION and RESTRICT foreign
    keys (and runs CASCADE / SET NULL actions) in AFTER triggers queued until the end of
    the statement, and a statement with data-modifying CTEs --
    ``WITH d1 AS (DELETE FROM ONLY a RETURNING 1), d2 AS (DELETE FROM ONLY b RETURNING 1)
    SELECT …`` -- is ONE statement. So every table of a cycle is emptied by one statement
    and the checks then find no referencing rows: no column is set to NULL, no constraint
    needs to be deferrable. A plain DELETE does the same for a self-reference.
    tests/integration/test_clean.py verifies it on PostgreSQL 15 and 18 for a
    self-reference (RESTRICT), a two-table cycle of NOT NULL, non-deferrable RESTRICT keys
    (where a DELETE of either table alone fails) and a three-table cycle mixing CASCADE,
    SET NULL and a deferrable key; tests/unit/test_clean_plan.py on random graphs.
    """

    def __init__(self, conn: psycopg.Connection[Any], plan: CleanPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.step_index = {step: i for i, step in enumerate(plan.steps, start=1)}

    def steps(self, strategy: Strategy) -> list[_Piece]:
        """The code after the head, with the tables each piece touches."""
        plan = self.plan
        if not plan.tables:
            return []
        step_of = {t: self.step_index[step] for step in plan.steps for t in step}
        pieces: list[_Piece] = [
            *self.probe(),
            (
                sql.SQL(
                    "  SELECT array_agg(DISTINCT u.s ORDER BY u.s) INTO v_steps\n"
                    "  FROM ROWS FROM (pg_catalog.unnest(v_f), pg_catalog.unnest({}::integer[])) AS u(f, s)\n"
                    "  WHERE u.f;"
                ).format(sql.Literal("{" + ",".join(str(step_of[t]) for t in plan.tables) + "}")),
                (),
            ),
        ]
        if plan.fk_checks_skippable:  # after the probe: its plan survives this reset
            pieces.append(
                (
                    sql.SQL(
                        "  IF p_replica AND v_steps IS NOT NULL THEN\n"
                        "    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);\n"
                        "  END IF;"
                    ),
                    (),
                )
            )
        if strategy == "delete":
            return pieces + self.loop([(step, self.delete(step)) for step in plan.steps])
        if strategy == "auto":
            return pieces + self.loop(
                [
                    (step, self.auto(step) if step[0] in plan.truncatable else self.delete(step))
                    for step in plan.steps
                ]
            )
        first = [step for step in plan.steps if step[0] in plan.truncatable]
        later = [step for step in plan.steps if step[0] not in plan.truncatable]
        pieces += self.loop([(step, self.mark_for_truncate(step)) for step in first])
        pieces.append((self.truncate_marked(), tuple(t for step in first for t in step)))
        # Tables a TRUNCATE may not name are DELETEd once the others are empty.
        return pieces + self.loop([(step, self.delete(step)) for step in later])

    def loop(self, code: list[tuple[tuple[Table, ...], list[sql.Composable]]]) -> list[_Piece]:
        """Run each step's code for the steps in v_steps, in plan order."""
        if not code:
            return []
        numbered = [(self.step_index[step], step, lines) for step, lines in code]
        return [
            (sql.SQL("  IF v_steps IS NOT NULL THEN\n  FOREACH v_i IN ARRAY v_steps LOOP"), ()),
            *self._tree(numbered),
            (sql.SQL("  END LOOP;\n  END IF;"), ()),
        ]

    def _tree(self, numbered: list[tuple[int, tuple[Table, ...], list[sql.Composable]]]) -> list[_Piece]:
        if len(numbered) <= 3:
            pieces: list[_Piece] = []
            for k, (index, step, lines) in enumerate(numbered):
                keyword = sql.SQL("IF" if k == 0 else "ELSIF")
                pieces.append((sql.SQL("  {} v_i = {} THEN").format(keyword, sql.Literal(index)), ()))
                pieces.append((sql.SQL("\n").join(lines), step))
            return [*pieces, (sql.SQL("  END IF;"), ())]
        middle = len(numbered) // 2
        return [
            (sql.SQL("  IF v_i <= {} THEN").format(sql.Literal(numbered[middle - 1][0])), ()),
            *self._tree(numbered[:middle]),
            (sql.SQL("  ELSE"), ()),
            *self._tree(numbered[middle:]),
            (sql.SQL("  END IF;"), ()),
        ]

    def _pos(self, table: Table) -> sql.Literal:
        return sql.Literal(self.plan.position[table])

    def probe(self) -> list[_Piece]:
        """``v_f[i]``: does table i hold rows? One statement for the tables without user
        triggers; one each for the others, whose trigger handling (ALTER TABLE, TRUNCATE)
        invalidates the plans that name them -- the big statement is then not replanned."""
        plan = self.plan
        flags = sql.SQL(", ").join(
            sql.SQL("false") if t in plan.triggered else sql.SQL("EXISTS (SELECT FROM {})").format(t.relation)
            for t in plan.tables
        )
        pieces: list[_Piece] = [(sql.SQL("  SELECT ARRAY[{}] INTO v_f;").format(flags), plan.tables)]
        for table in plan.triggered:
            probe = sql.SQL("  v_f[{}] := EXISTS (SELECT FROM {});").format(self._pos(table), table.relation)
            pieces.append((probe, (table,)))
        return pieces

    def delete(self, step: tuple[Table, ...], indent: str = "    ") -> list[sql.Composable]:
        """Empty the step's tables by DELETE (one statement), keeping user triggers from
        firing as :attr:`CleanPlan.skip` says, and record those that held rows."""
        modes = {self.plan.skip[t] for t in step if t in self.plan.skip}
        if not modes:
            return self._delete(step, indent)
        # A cycle's tables share their referencers, so "truncate" is never mixed with a
        # table that cannot be truncated: the plan chose it only where the role may.
        if None in modes:
            return self._refuse(step, indent)
        if "truncate" in modes:
            return self._truncate(step, indent)
        before, after = self._skip_triggers(step, indent)
        return [*before, *self._delete(step, indent), *after]

    def _refuse(self, step: tuple[Table, ...], indent: str) -> list[sql.Composable]:
        """Stop the reset (nothing is deleted: it is one transaction) and say which table."""
        table = next(t for t in step if t in self.plan.skip and self.plan.skip[t] is None)
        return [
            sql.SQL("{}RAISE EXCEPTION 'testdb: table % fires user triggers', {} USING ERRCODE = {};").format(
                sql.SQL(indent), self._pos(table), sql.Literal(NO_SKIP_SQLSTATE)
            )
        ]

    def _skip_triggers(
        self, step: tuple[Table, ...], indent: str
    ) -> tuple[list[sql.Composable], list[sql.Composable]]:
        """Statements that keep the step's user triggers from firing, and those that undo them."""
        ind = sql.SQL(indent)
        plan = self.plan
        before: list[sql.Composable] = []
        after: list[sql.Composable] = []
        disabled = [g for t in step if plan.skip.get(t) == "disable" for g in plan.triggered[t]]
        if disabled:
            # ALTER TABLE refuses a table with pending trigger events: run the deferred
            # foreign-key checks of earlier steps now (they pass: referencing tables come first).
            before.append(sql.SQL("{}SET CONSTRAINTS ALL IMMEDIATE;").format(ind))
        for trigger in disabled:
            relation = sql.SQL("ONLY {}").format(trigger.relation.qualified)
            name = sql.Identifier(trigger.name)
            before.append(sql.SQL("{}ALTER TABLE {} DISABLE TRIGGER {};").format(ind, relation, name))
            again = sql.SQL("ENABLE ALWAYS" if trigger.enabled == "A" else "ENABLE")
            after.append(sql.SQL("{}ALTER TABLE {} {} TRIGGER {};").format(ind, relation, again, name))
        if any(plan.skip.get(t) == "replica" for t in step):
            before += [
                sql.SQL("{}v_srr := pg_catalog.current_setting('session_replication_role');").format(ind),
                sql.SQL(
                    "{}PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);"
                ).format(ind),
            ]
            after.append(
                sql.SQL("{}PERFORM pg_catalog.set_config('session_replication_role', v_srr, true);").format(
                    ind
                )
            )
        return before, after

    def _truncate(self, step: tuple[Table, ...], indent: str) -> list[sql.Composable]:
        """TRUNCATE the step and what references it (already empty: earlier in the plan);
        rows are counted first, up to a cap, for the report."""
        ind = sql.SQL(indent)
        plan = self.plan
        closure = sorted({r for t in step for r in plan.referencers[t]}, key=plan.position.__getitem__)
        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM (SELECT FROM {} LIMIT {}) AS s)").format(
                t.relation, sql.Literal(TRUNCATE_COUNT_CAP)
            )
            for t in step
        )
        code: list[sql.Composable] = [
            sql.SQL("{}SELECT ARRAY[{}] INTO v_s;").format(ind, counts),
            sql.SQL("{}TRUNCATE {};").format(ind, sql.SQL(", ").join(t.relation for t in closure)),
        ]
        for k, table in enumerate(step, start=1):
            code.append(
                sql.SQL(
                    "{}IF v_s[{k}] > 0 THEN v_done := v_done || {i}; v_rows := v_rows || v_s[{k}];"
                    " v_trunc := v_trunc || {i}; END IF;"
                    " IF v_s[{k}] >= {cap} THEN v_exact := false; END IF;"
                ).format(ind, k=sql.Literal(k), i=self._pos(table), cap=sql.Literal(TRUNCATE_COUNT_CAP))
            )
        return code

    def _delete(self, step: tuple[Table, ...], indent: str = "    ") -> list[sql.Composable]:
        ind = sql.SQL(indent)
        if len(step) == 1:
            return [
                sql.SQL("{}DELETE FROM {};").format(ind, step[0].relation),
                sql.SQL("{}GET DIAGNOSTICS v_n = ROW_COUNT;").format(ind),
                sql.SQL("{}v_done := v_done || {}; v_rows := v_rows || v_n;").format(ind, self._pos(step[0])),
            ]
        ctes = sql.SQL(", ").join(
            sql.SQL("d{} AS (DELETE FROM {} RETURNING 1)").format(sql.Literal(k), t.relation)
            for k, t in enumerate(step, start=1)
        )
        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM d{})").format(sql.Literal(k)) for k in range(1, len(step) + 1)
        )
        code: list[sql.Composable] = [
            sql.SQL("{}WITH {}\n{}SELECT ARRAY[{}] INTO v_s;").format(ind, ctes, ind, counts)
        ]
        for k, table in enumerate(step, start=1):
            code.append(
                sql.SQL(
                    "{}IF v_s[{k}] > 0 THEN v_done := v_done || {i}; v_rows := v_rows || v_s[{k}]; END IF;"
                ).format(ind, k=sql.Literal(k), i=self._pos(table))
            )
        return code

    def auto(self, step: tuple[Table, ...]) -> list[sql.Composable]:
        """DELETE the step, or TRUNCATE it if it holds at least its cap of rows.

        A table's file size bounds its rows (a heap row takes at least MIN_ROW_BYTES), so a
        table whose file is smaller than cap * MIN_ROW_BYTES is DELETEd without counting:
        ``pg_relation_size`` is a PL/pgSQL "simple expression" (no executor, no new lock),
        where a count would be a statement of its own per dirty table -- measurable when
        every table holds rows. Otherwise rows are counted up to the cap.

        The TRUNCATE names the step and everything that references it (all earlier in the
        plan, so already empty) and waits at most AUTO_TRUNCATE_LOCK_MS for its ACCESS
        EXCLUSIVE locks; if another session holds one, the step is DELETEd instead. (The
        EXCEPTION block's subtransaction, which also restores lock_timeout, is only entered
        when a TRUNCATE is tried.)
        """
        plan = self.plan
        closure = sorted({r for t in step for r in plan.referencers[t]}, key=plan.position.__getitem__)
        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM (SELECT FROM {} LIMIT {}) AS s)").format(
                t.relation, sql.Literal(plan.caps[t])
            )
            for t in step
        )
        big = sql.SQL(" OR ").join(
            sql.SQL("v_s[{}] >= {}").format(sql.Literal(k), sql.Literal(plan.caps[t]))
            for k, t in enumerate(step, start=1)
        )
        record = [
            sql.SQL(
                "      IF v_s[{k}] > 0 THEN v_done := v_done || {i}; v_rows := v_rows || v_s[{k}];"
                " v_trunc := v_trunc || {i}; END IF;"
            ).format(k=sql.Literal(k), i=self._pos(table))
            for k, table in enumerate(step, start=1)
        ]
        code = [
            sql.SQL("    SELECT ARRAY[{}] INTO v_s;").format(counts),
            sql.SQL("    IF {} THEN").format(big),
            sql.SQL("    BEGIN"),
            sql.SQL(
                "      PERFORM pg_catalog.set_config('lock_timeout',"
                " least(p_lock_timeout_ms, {})::text || 'ms', true);"
            ).format(sql.Literal(AUTO_TRUNCATE_LOCK_MS)),
            sql.SQL("      TRUNCATE {};").format(sql.SQL(", ").join(t.relation for t in closure)),
            sql.SQL(
                "      PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);"
            ),
            *record,
            sql.SQL("      v_exact := false;"),
            # Busy, or a role that may DELETE but not TRUNCATE: the DELETE below does the same.
            sql.SQL("    EXCEPTION WHEN lock_not_available OR insufficient_privilege THEN"),
            *self.delete(step, indent="      "),
            sql.SQL("    END;"),
            sql.SQL("    ELSE"),
            *self.delete(step, indent="      "),
            sql.SQL("    END IF;"),
        ]
        table = step[0]
        if len(step) > 1 or table.partitioned:  # no single file to measure: always count
            return code
        # The regclass literal is resolved when the statement is planned, and the plan is
        # invalidated with the table.
        size = sql.SQL("pg_catalog.pg_relation_size({}::pg_catalog.regclass)").format(
            sql.Literal(table.qualified.as_string(self.conn))
        )
        return [
            sql.SQL("    IF {} < {} THEN").format(size, sql.Literal(plan.caps[table] * MIN_ROW_BYTES)),
            *self.delete(step, indent="      "),
            sql.SQL("    ELSE"),
            *code,
            sql.SQL("    END IF;"),
        ]

    def mark_for_truncate(self, step: tuple[Table, ...]) -> list[sql.Composable]:
        """Strategy truncate, first pass: note each table holding rows (counted up to a cap,
        for the report) and everything that references it."""
        plan = self.plan
        code: list[sql.Composable] = []
        for table in step:
            closure = "{" + ",".join(str(plan.position[r]) for r in plan.referencers[table]) + "}"
            code += [
                sql.SQL("  IF v_f[{}] THEN").format(self._pos(table)),
                sql.SQL("    SELECT count(*) INTO v_n FROM (SELECT FROM {} LIMIT {}) AS s;").format(
                    table.relation, sql.Literal(TRUNCATE_COUNT_CAP)
                ),
                sql.SQL(
                    "    v_done := v_done || {}; v_rows := v_rows || v_n; v_tr := v_tr || {}::integer[];"
                ).format(self._pos(table), sql.Literal(closure)),
                sql.SQL("    IF v_n >= {} THEN v_exact := false; END IF;").format(
                    sql.Literal(TRUNCATE_COUNT_CAP)
                ),
                sql.SQL("  END IF;"),
            ]
        return code

    def truncate_marked(self) -> sql.Composable:
        """Strategy truncate, second pass: one TRUNCATE of every marked table."""
        # The relation names go in as one text[] literal whose elements were composed with
        # sql.Identifier; EXECUTE picks the marked ones by position.
        names = [t.relation.as_string(self.conn) for t in self.plan.tables]
        return sql.SQL(
            "  IF cardinality(v_tr) > 0 THEN\n"
            "    EXECUTE 'TRUNCATE ' || (\n"
            "      SELECT pg_catalog.string_agg(({}::pg_catalog.text[])[x], ', ' ORDER BY x)\n"
            "      FROM (SELECT DISTINCT pg_catalog.unnest(v_tr) AS x) AS u);\n"
            "    v_trunc := v_done;\n"
            "  END IF;"
        ).format(sql.Literal(names))
