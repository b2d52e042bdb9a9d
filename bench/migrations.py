"""Migration-aware templates: a 200-revision Alembic chain gets one new revision.

Each revision creates a table with an index and a foreign key to the previous one.

- baseline: the full rebuild after one new revision (all 201 revisions from scratch, what
  a template keyed by a hash of every input has to do), with testdb's forked Alembic; also
  shown: the same with Alembic in a fresh interpreter, as a CI job without the cache runs it;
- testdb: the extension (clone the cached 200-revision template, apply the new one);
- switch: branch A -> B -> A; back on A reuses A's template (builds: 0);
- import: ``template import`` of an exported dump against migrating from scratch.

    python bench/migrations.py [--server local|embedded] [--revisions 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from provision import server_info, version_of  # noqa: E402

from _alembic_project import AlembicProject  # noqa: E402
from testdb.config import Settings  # noqa: E402
from testdb.migrations import alembic as alembic_module  # noqa: E402
from testdb.migrations.alembic import FORK  # noqa: E402
from testdb.ownership import Marker, list_databases  # noqa: E402
from testdb.provision import drop_database  # noqa: E402
from testdb.servers.base import ServerInfo, admin_connection  # noqa: E402
from testdb.template import TemplateResult, ensure_template  # noqa: E402
from testdb.template_io import export_from, import_into  # noqa: E402


def revision_body(i: int) -> str:
    parent = f", parent_id integer REFERENCES t{i - 1:04d} (id)" if i else ""
    return (
        f'op.execute("CREATE TABLE t{i:04d} (id serial PRIMARY KEY, name text NOT NULL{parent})")\n'
        f'op.execute("CREATE INDEX ix_t{i:04d}_name ON t{i:04d} (name)")'
    )


def chain(root: Path, revisions: int) -> AlembicProject:
    project = AlembicProject(root)
    for i in range(revisions):
        project.add(revision_body(i))
    return project


class Bench:
    def __init__(self, info: ServerInfo, project: AlembicProject) -> None:
        self.info, self.project, self.prefixes = info, project, set()  # type: ignore[var-annotated]
        self.settings = Settings(server="url", url=info.url, schema={"alembic": "alembic.ini"})  # type: ignore[arg-type]

    def ensure(self, prefix: str) -> TemplateResult:
        self.prefixes.add(prefix)
        marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, None)
        return ensure_template(
            self.info, prefix, self.settings.schema, marker, self.project.root, lambda i, d: {}
        )

    def drop(self, prefix: str) -> None:
        with admin_connection(self.info) as conn:
            for row in list_databases(conn):
                if row.name.startswith(prefix + "_tpl_") and row.marker is not None:
                    drop_database(conn, row.name)

    def cleanup(self) -> None:
        for prefix in self.prefixes:
            self.drop(prefix)


def no_env(info: ServerInfo, database: str) -> dict[str, str]:
    return {}


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def one_run(bench: Bench, revisions: int, tmp: Path) -> dict[str, float | int]:
    project = bench.project
    cached = f"bm_{secrets.token_hex(3)}"
    bench.ensure(cached)  # the 200-revision template a previous run left
    head = project.head
    new = project.add(revision_body(revisions))
    baseline_s, full = timed(lambda: bench.ensure(f"bm_{secrets.token_hex(3)}"))  # nothing cached
    alembic_module.FORK = False  # as CI runs it: `alembic upgrade` in a fresh interpreter
    try:
        cli_s, _ = timed(lambda: bench.ensure(f"bm_{secrets.token_hex(3)}"))
    finally:
        alembic_module.FORK = FORK
    extend_s, extended = timed(lambda: bench.ensure(cached))
    assert isinstance(full, TemplateResult) and isinstance(extended, TemplateResult)
    assert full.notice == "built" and extended.extended, (full.notice, extended.notice)
    # Branch B: the same parent, another revision; then back to A.
    text_a = project.path(new).read_text()
    project.remove(new)
    project.add('op.execute("CREATE TABLE branch_b (id serial PRIMARY KEY)")', down=head, name=new)
    bench.ensure(cached)
    project.path(new).write_text(text_a)
    switch_s, back = timed(lambda: bench.ensure(cached))
    assert isinstance(back, TemplateResult)
    dump = tmp / "template.dump"
    export_from(bench.info, cached, bench.settings, project.root, no_env, dump)
    bench.drop(cached)
    import_s, _ = timed(
        lambda: import_into(bench.info, cached, bench.settings, project.root, lambda i, d: {}, dump)
    )
    project.remove(new)
    project.head = head
    return {
        "baseline": baseline_s,
        "fresh_interpreter": cli_s,
        "extend": extend_s,
        "switch_back": switch_s,
        "switch_builds": int(back.built),
        "import": import_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=("local", "embedded"), default="local")
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    info, stop = server_info(args.server)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(info, chain(Path(tmp) / "app", args.revisions))
        try:
            version = version_of(info)
            for _ in range(args.runs):
                runs.append(one_run(bench, args.revisions, Path(tmp)))
                bench.cleanup()
        finally:
            bench.cleanup()
            stop()
    report(runs, args, version)


def report(runs: list[dict[str, float | int]], args: argparse.Namespace, version: str) -> None:
    def med(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    def spread(key: str) -> str:
        values = [float(r[key]) for r in runs]
        return f"{min(values):.2f}-{max(values):.2f}"

    base = med("baseline")
    table = Table(title=f"{args.revisions}-revision Alembic chain + 1, median of {args.runs} ({version})")
    for column in ("case", "median s", "range s", "vs full rebuild"):
        table.add_column(column, justify="left" if column == "case" else "right")
    rows = [
        (f"full rebuild, {args.revisions + 1} revisions (baseline)", "baseline"),
        ("full rebuild, alembic in a fresh interpreter", "fresh_interpreter"),
        ("extension: clone + 1 revision", "extend"),
        ("branch A -> B -> A: back on A", "switch_back"),
        ("template import of the dump", "import"),
    ]
    for label, key in rows:
        table.add_row(label, f"{med(key):.2f}", spread(key), f"{base / med(key):.1f}x")
    Console().print(table)
    print(f"builds when switching back to A: {sum(int(r['switch_builds']) for r in runs)}")
    print(
        json.dumps(
            {
                "name": f"migrations-extend-{args.server}",
                "baseline_s": round(base, 3),
                "testdb_s": round(med("extend"), 3),
                "ratio": round(base / med("extend"), 2),
                "switch_back_s": round(med("switch_back"), 3),
                "switch_builds": sum(int(r["switch_builds"]) for r in runs),
                "import_s": round(med("import"), 3),
                "import_ratio": round(base / med("import"), 2),
                "import_vs_fresh_interpreter": round(med("fresh_interpreter") / med("import"), 2),
                "revisions": args.revisions,
                "runs": args.runs,
                "machine": version,
            }
        )
    )


if __name__ == "__main__":
    main()
