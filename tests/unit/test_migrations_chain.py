"""Which cached template a chain extends, and why not: decided from the markers alone."""

from __future__ import annotations

from pathlib import Path

from testdb.migrations import Chain
from testdb.ownership import DatabaseRow, Marker
from testdb.template import Plan, extension_source

PREFIX = "app"


def _chain(*revisions: str, base: str = "b1") -> Chain:
    def upgrade(url: str, env: object, root: Path) -> None:
        raise AssertionError("not called")

    return Chain("alembic", base, tuple(revisions), upgrade)


def _template(name: str, chain: Chain, used: float = 1.0, prefix: str = PREFIX) -> DatabaseRow:
    marker = Marker("r1", "template", prefix, "u", "h", 1, 0.0, chain=chain.entries, used=used)
    return DatabaseRow(f"{prefix}_tpl_{name}", marker, 0)


def test_the_template_with_the_most_applied_revisions_is_extended() -> None:
    rows = [_template("one", _chain("a:1")), _template("two", _chain("a:1", "b:2"))]
    source, why = extension_source(rows, Plan("app_tpl_new", _chain("a:1", "b:2", "c:3")), PREFIX)
    assert (source and source.name, why) == ("app_tpl_two", "")


def test_an_edited_revision_names_the_revision_and_the_template() -> None:
    rows = [_template("one", _chain("a:1", "b:2"))]
    source, why = extension_source(rows, Plan("app_tpl_new", _chain("a:1", "b:9", "c:3")), PREFIX)
    assert source is None
    assert why == "revision b was edited after app_tpl_one applied it"


def test_a_revision_missing_from_the_graph_is_not_an_extension() -> None:
    rows = [_template("one", _chain("a:1", "x:5"))]
    source, why = extension_source(rows, Plan("app_tpl_new", _chain("a:1", "c:3")), PREFIX)
    assert source is None
    assert why == "app_tpl_one has revision x, which is not in the current graph"


def test_a_template_with_another_base_is_never_a_source() -> None:
    rows = [_template("one", _chain("a:1", base="other"))]
    assert extension_source(rows, Plan("app_tpl_new", _chain("a:1", "b:2")), PREFIX) == (None, "")


def test_another_prefixs_template_is_never_a_source() -> None:
    rows = [_template("one", _chain("a:1"), prefix="else")]
    assert extension_source(rows, Plan("app_tpl_new", _chain("a:1", "b:2")), PREFIX) == (None, "")


def test_a_schema_without_a_chain_never_extends() -> None:
    rows = [_template("one", _chain("a:1"))]
    assert extension_source(rows, Plan("app_tpl_new", None), PREFIX) == (None, "")
