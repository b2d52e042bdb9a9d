from __future__ import annotations

import pytest

from testdb.errors import NamingError
from testdb.naming import (
    MAX_IDENTIFIER_BYTES,
    database_names,
    is_protected,
    template_name,
    validate_prefix,
    worker_database,
    worker_index,
)


def test_worker_maps_to_prefixed_name() -> None:
    assert worker_database("security_test", "gw0") == "security_test_gw0"


def test_serial_run_uses_bare_prefix() -> None:
    assert worker_database("security_test", "master") == "security_test"


def test_unique_names_append_short_run_id() -> None:
    assert worker_database("t", "gw3", "abcdef123456") == "t_gw3_abcdef"
    assert worker_database("t", "master", "abcdef123456") == "t_abcdef"


def test_database_names_cover_serial_and_every_worker() -> None:
    names = database_names("p", 3)
    assert names.all() == ["p", "p_gw0", "p_gw1", "p_gw2"]
    assert names.for_worker("gw2") == "p_gw2"
    assert names.for_worker("master") == "p"


@pytest.mark.parametrize("prefix", ["Bad", "a b", "x;drop", "qu'ote", "ünï", "1abc", "", "a-b"])
def test_prefix_outside_plain_identifiers_is_refused(prefix: str) -> None:
    with pytest.raises(NamingError):
        validate_prefix(prefix, workers=1)


def test_prefix_must_leave_room_for_the_longest_suffix() -> None:
    longest_ok = "p" * (MAX_IDENTIFIER_BYTES - len(template_name("", "0" * 12)))
    assert validate_prefix(longest_ok, workers=8) == longest_ok
    with pytest.raises(NamingError, match="too long"):
        validate_prefix(longest_ok + "p", workers=8)


def test_unique_names_shorten_the_allowed_prefix() -> None:
    prefix = "p" * 46
    validate_prefix(prefix, workers=2)
    with pytest.raises(NamingError):
        validate_prefix(prefix, workers=2, unique=True)


def test_invalid_worker_id_is_refused() -> None:
    with pytest.raises(NamingError):
        worker_database("p", "gw;drop")


def test_protected_names_include_the_server_default_database() -> None:
    assert is_protected("postgres")
    assert is_protected("template0")
    assert is_protected("template1")
    assert is_protected("appdb", default_database="appdb")
    assert not is_protected("p_gw0", default_database="appdb")


def test_worker_index_parses_xdist_ids() -> None:
    assert worker_index("gw12") == 12
    assert worker_index("master") is None
