"""The embedded server checks a password: random per cluster, SCRAM, never trust."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg
import pytest

from testdb.servers import embedded
from testdb.servers.base import ServerInfo

pytestmark = pytest.mark.embedded


@pytest.fixture
def cluster(pg_server: ServerInfo) -> ServerInfo:
    """The session's embedded server (``pg_server`` runs every integration test on each kind)."""
    if pg_server.kind != "embedded":
        pytest.skip("only the embedded server's authentication is testdb's to set")
    return pg_server


def _refused(**params: object) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(dbname="postgres", user="postgres", connect_timeout=5, **params).close()  # type: ignore[arg-type]
    return str(caught.value)


def test_the_server_url_carries_a_password_that_connects(cluster: ServerInfo) -> None:
    assert cluster.admin_url.password
    with psycopg.connect(cluster.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_no_password_is_refused_over_tcp(cluster: ServerInfo) -> None:
    assert "password" in _refused(host="127.0.0.1", port=cluster.admin_url.port)


def test_no_password_is_refused_on_the_socket(cluster: ServerInfo) -> None:
    assert cluster.data_dir is not None
    assert "password" in _refused(host=str(Path(cluster.data_dir) / "sock"), port=cluster.admin_url.port)


def test_a_wrong_password_is_refused(cluster: ServerInfo) -> None:
    wrong = cluster.admin_url.set(password="not-" + str(cluster.admin_url.password))
    assert "password authentication failed" in _refused(
        host="127.0.0.1", port=wrong.port, password=wrong.password
    )


def test_the_password_is_stored_scram_hashed(cluster: ServerInfo) -> None:
    with psycopg.connect(cluster.url) as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").fetchone()
    assert row is not None and str(row[0]).startswith("SCRAM-SHA-256$")


def test_the_cluster_record_holding_the_password_is_private(cluster: ServerInfo) -> None:
    assert cluster.data_dir is not None
    record = Path(cluster.data_dir) / embedded.CLUSTER_FILE
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert embedded.read_record(Path(cluster.data_dir)) is not None


def test_it_listens_on_the_loopback_address_only(cluster: ServerInfo) -> None:
    with psycopg.connect(cluster.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
