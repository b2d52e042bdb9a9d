"""Connection admission against a real server, through a LOGIN CREATEDB role with a cap.

Each test gets its own capped role (no superuser), so the role's connection limit is the
tightest cap and other tests' sessions on the shared server do not count against it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testdb.admission import (
    MIN_PER_WORKER,
    AdmissionError,
    Reservation,
    connect_waiting,
    read_limits,
    reserve,
)
from testdb.config import Settings, load_settings
from testdb.servers.base import ServerInfo, connect, describe

Capped = Callable[[int], ServerInfo]


@pytest.fixture
def settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(wait: float = 5.0) -> Settings:
        return load_settings(tmp_path, {"admission": {"wait": wait}, "max_connections_headroom": 0})

    return make


@contextlib.contextmanager
def held(info: ServerInfo, workers: int, settings: Settings) -> Iterator[Reservation]:
    """A run's reservation on its own lock connection, as ``bound_run`` holds it."""
    with connect(info.admin_url) as conn, reserve(info, workers, settings, lambda _: None, conn=conn) as got:
        yield got


def admit_once(
    info: ServerInfo, workers: int, settings: Settings, notify: Callable[[str], None]
) -> Reservation:
    """Reserve and give back at once (or raise what reserving raised)."""
    with reserve(info, workers, settings, notify) as got:
        return got


def open_sessions(info: ServerInfo, count: int) -> list[psycopg.Connection[Any]]:
    return [connect(info.admin_url) for _ in range(count)]


def test_a_lone_run_gets_its_wanted_pools_within_the_role_limit(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(24)
    with held(info, 3, settings()) as got:
        assert got.connections <= 24
        assert got.pool == (2, 2)
        assert got.waited_s < 5


def test_a_run_that_does_not_fit_waits_and_says_for_what(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(12)
    said: list[str] = []
    with held(info, 3, settings()), pytest.raises(AdmissionError, match="gave up after 1s"):
        admit_once(info, 3, settings(wait=1), said.append)
    assert said[0].startswith("waiting for 8 connections:"), said


def test_a_waiting_run_is_admitted_when_the_run_before_it_ends(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(12)
    said: list[str] = []
    first = held(info, 3, settings())
    first.__enter__()
    threading.Timer(1.0, lambda: first.__exit__(None, None, None)).start()
    with reserve(info, 3, settings(wait=30), said.append) as got:
        assert got.waited_s >= 0.5
    assert said[-1].startswith("admitted after"), said


def test_waiting_runs_are_served_in_arrival_order_and_say_how_many_are_ahead(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(12)
    second_waits = threading.Event()
    said: list[str] = []

    def second() -> None:
        with contextlib.suppress(AdmissionError):
            admit_once(info, 3, settings(wait=3), lambda m: second_waits.set())

    with held(info, 3, settings()):
        thread = threading.Thread(target=second)
        thread.start()
        assert second_waits.wait(10)
        with pytest.raises(AdmissionError):
            admit_once(info, 3, settings(wait=1), said.append)
        thread.join()
    assert said[0] == "waiting for 8 connections: 1 run ahead", said


def test_pools_shrink_to_the_minimum_when_the_room_is_short(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(10)
    with held(info, 4, settings()) as got:
        assert got.pool == (1, 0)
        assert got.connections == 2 + 4 * MIN_PER_WORKER


def test_other_sessions_of_the_role_count_against_its_limit(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(16)
    others = open_sessions(info, 8)
    try:
        with held(info, 2, settings()) as got:
            assert got.connections <= 16 - 8  # the lock connection is part of the reservation
    finally:
        for conn in others:
            conn.close()


def test_a_request_no_idle_server_could_admit_fails_at_once_with_the_largest_n(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(10)
    started = time.monotonic()
    with pytest.raises(
        AdmissionError, match="too many workers: -n 20 needs at least 42 connections"
    ) as caught:
        admit_once(info, 20, settings(wait=60), lambda _: None)
    assert caught.value.hint is not None and "-n 4 or fewer" in caught.value.hint
    assert time.monotonic() - started < 5


def test_a_killed_runs_reservation_goes_with_its_session(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(12)
    lock_conn = connect(info.admin_url)
    reserve(info, 3, settings(), lambda _: None, conn=lock_conn).__enter__()
    lock_conn.close()  # what SIGKILL does to a run's lock connection
    with reserve(info, 3, settings(wait=5), lambda _: None) as got:
        assert got.waited_s < 2


def test_the_role_limit_is_read_from_the_catalog(capped_role: Capped) -> None:
    info = capped_role(24)
    with connect(info.admin_url) as conn:
        limits = read_limits(conn, headroom=0)
    assert [limit.limit for limit in limits if limit.scope == "role"] == [24]


def test_a_run_waits_for_its_first_connection_while_the_role_is_full(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(4)
    others = open_sessions(info, 4)
    said: list[str] = []

    def close_others() -> None:
        for conn in others:
            conn.close()

    threading.Timer(1.0, close_others).start()
    with connect_waiting(info, settings(wait=30), said.append) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert said == [f"waiting for a connection: {describe(info.admin_url)} is full"]


def test_a_full_role_fails_in_one_line_after_the_wait(
    capped_role: Capped, settings: Callable[..., Settings]
) -> None:
    info = capped_role(2)
    others = open_sessions(info, 2)
    try:
        with pytest.raises(AdmissionError, match="gave up after 1s waiting for a connection"):
            connect_waiting(info, settings(wait=1), lambda _: None)
    finally:
        for conn in others:
            conn.close()
