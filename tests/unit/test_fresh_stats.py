from __future__ import annotations

import pytest

from testdb.errors import NamingError
from testdb.fresh.names import unmarked_fresh_clones
from testdb.fresh.pool import FreshPool, PoolSpec
from testdb.fresh.stats import PoolStats, percentile
from testdb.ownership import DatabaseRow, Marker

RUN = "abcdef123456"


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert percentile([3.0], 95) == 3.0


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 50) == 0.0


def test_p95_sits_near_the_top() -> None:
    assert 94.0 <= percentile([float(n) for n in range(1, 101)], 95) <= 96.0


def test_merged_stats_add_counts_and_pool_timings() -> None:
    one = PoolStats(handouts=3, waits=1, handout_ms=[1.0, 2.0], high_water=4, kept=["a"])
    two = PoolStats(handouts=2, handout_ms=[3.0], high_water=5, reclaimed=2)
    total = PoolStats.merged([one, two])
    assert (total.handouts, total.waits, total.high_water, total.reclaimed) == (5, 1, 9, 2)
    assert total.handout_ms == [1.0, 2.0, 3.0] and total.kept == ["a"]


def test_stats_survive_the_trip_to_the_controller() -> None:
    stats = PoolStats(handouts=2, waits=1, recycle_ms=[50.0], claimed=3)
    assert PoolStats.from_dict(stats.to_dict()) == stats


def test_summary_states_waits_as_a_share_of_hand_outs() -> None:
    assert "4 hand-outs, 1 waits (25.0%)" in PoolStats(handouts=4, waits=1).summary()


def _spec(prefix: str = "app", worker: str = "gw0") -> PoolSpec:
    return PoolSpec("postgresql://u@h/postgres", "app_tpl_x", prefix, RUN, worker)


def test_fresh_names_carry_prefix_run_and_worker() -> None:
    assert FreshPool(_spec()).fresh_name(26) == "app_fabcdef_gw0_1a"


def test_a_prefix_too_long_for_fresh_names_is_refused() -> None:
    with pytest.raises(NamingError):
        FreshPool(_spec(prefix="p" * 50)).fresh_name(10**6)


def test_kept_names_say_failed() -> None:
    assert FreshPool(_spec()).kept_name().startswith("app_failed_")


def _row(name: str, marked: bool) -> DatabaseRow:
    return DatabaseRow(name, Marker.for_run(RUN, "fresh", "app", None) if marked else None, 0)


def test_unmarked_clones_are_only_this_runs_unmarked_fresh_names() -> None:
    rows = [
        _row("app_fabcdef_gw0_3", marked=False),
        _row("app_fabcdef_gw1_4", marked=False),
        _row("app_fabcdef_gw0_2", marked=True),
        _row("app_f999999_gw0_1", marked=False),
        _row("app_gw0", marked=False),
    ]
    assert unmarked_fresh_clones(rows, "app", RUN) == ["app_fabcdef_gw0_3", "app_fabcdef_gw1_4"]
    assert unmarked_fresh_clones(rows, "app", RUN, {"gw0"}) == ["app_fabcdef_gw0_3"]
