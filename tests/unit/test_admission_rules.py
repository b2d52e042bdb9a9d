"""Admission's pure rules: pool split, queue order across the ticket wrap, the decision."""

from __future__ import annotations

from testdb.admission import MIN_PER_WORKER, WANT_PER_WORKER, Limit, Snapshot, _before, decide, split_pool

ROLE_24 = [Limit("role ci's connection limit", 24, "role")]


def snap(used: int = 0, ahead: int = 0, behind: int = 0) -> Snapshot:
    return Snapshot(ROLE_24, {"server": 0, "role": used, "database": 0}, ahead, behind)


def test_a_worker_keeps_one_connection_for_cleaning_outside_its_pool() -> None:
    assert split_pool(MIN_PER_WORKER) == (1, 0)
    assert split_pool(WANT_PER_WORKER) == (2, 2)


def test_tickets_keep_their_order_across_the_32_bit_wrap() -> None:
    assert _before(2**32 - 1, 3)
    assert not _before(3, 2**32 - 1)


def test_a_run_with_runs_ahead_waits_even_when_it_would_fit() -> None:
    assert decide(snap(ahead=1), workers=3) is None


def test_a_lone_run_takes_what_it_wants() -> None:
    assert decide(snap(), workers=3) == WANT_PER_WORKER


def test_a_run_with_runs_behind_takes_only_its_minimum() -> None:
    assert decide(snap(behind=2), workers=3) == MIN_PER_WORKER


def test_a_run_shrinks_its_pools_to_the_room_left() -> None:
    assert decide(snap(used=10), workers=3) == 4


def test_a_run_below_its_minimum_waits() -> None:
    assert decide(snap(used=17), workers=3) is None


def test_a_one_worker_run_still_reserves_what_provisioning_opens() -> None:
    assert decide(snap(used=20), workers=1) is None  # 4 free: 2 + 1 x 2, but provisioning peaks at 5
