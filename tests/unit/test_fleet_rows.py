"""How the fleet view reads a run's liveness and a lock connection's name."""

from __future__ import annotations

import time

from testdb.fleet import FleetRun, _from_label, _from_markers


def test_a_run_holding_its_lock_is_alive_by_lock_whatever_its_lease() -> None:
    assert FleetRun("abc", locked=True, expires=time.time() - 60).liveness == "lock"


def test_a_detached_run_is_alive_by_its_lease_until_it_expires() -> None:
    assert FleetRun("abc", expires=time.time() + 3 * 3600 + 30).liveness == "lease 3h00m"


def test_a_run_without_lock_and_with_an_expired_lease_is_dead() -> None:
    run = FleetRun("abc", expires=time.time() - 1)
    assert (run.liveness, run.alive) == ("dead", False)


def test_a_lock_connection_name_gives_owner_and_pid() -> None:
    assert _from_label("testdb 1a2b3c4d 4242 ci@runner-7", 100.0) == ("ci@runner-7", 4242, 100.0)


def test_another_applications_name_gives_no_owner() -> None:
    assert _from_label("psql", None) == ("?", None, None)


def test_a_kept_failed_database_does_not_lend_its_lease_to_a_dead_run() -> None:
    from testdb.ownership import DatabaseRow, Marker

    worker = Marker.for_run("abcdef123456", "worker", "app", None)
    kept = Marker.for_run("abcdef123456", "failed", "app", 24 * 3600)
    rows = [DatabaseRow("app_gw0", worker, 0), DatabaseRow("app_zz_failed", kept, 0)]  # name order
    assert _from_markers(rows)["abcdef123456"].liveness == "dead"
