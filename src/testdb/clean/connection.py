"""Small rules every cleaning round trip follows on the connection it is given."""

from __future__ import annotations

from typing import Any

import psycopg

from testdb.errors import CleanError, first_line
from testdb.servers.base import scrub


def check_idle(conn: psycopg.Connection[Any]) -> None:
    """Refuse a connection inside a transaction: cleaning commits, and would commit it too."""
    if conn.closed:
        raise CleanError("cannot clean through a closed connection", hint="open a new connection")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise CleanError(
            f"cannot clean {conn.info.dbname} on a connection with an open transaction",
            hint="commit or roll back first, or pass an autocommit connection",
        )


def end_transaction(conn: psycopg.Connection[Any]) -> None:
    """Leave a non-autocommit connection idle (autocommit ones already are)."""
    if not conn.autocommit and not conn.closed:
        status = conn.info.transaction_status
        if status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        elif status == psycopg.pq.TransactionStatus.INTRANS:
            conn.commit()


def one_line(exc: BaseException) -> str:
    """The first line of an error, with any password masked."""
    return scrub(first_line(exc))
