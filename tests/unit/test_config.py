from __future__ import annotations

from pathlib import Path

import pytest

from testdb.config import load_settings, parse_duration
from testdb.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_testdb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TESTDB_"):
            monkeypatch.delenv(name)


def test_defaults_without_any_config(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.prefix == "test"
    assert settings.server == "auto"
    assert settings.clean.keep == ["alembic_version"]
    assert settings.source_file is None


def test_testdb_toml_is_read(tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text('prefix = "security_test"\n[clean]\nstrategy = "delete"\n')
    settings = load_settings(tmp_path)
    assert settings.prefix == "security_test"
    assert settings.clean.strategy == "delete"


def test_pyproject_tool_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.testdb]\nprefix = "from_pyproject"\n')
    assert load_settings(tmp_path).prefix == "from_pyproject"


def test_testdb_toml_wins_over_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.testdb]\nprefix = "from_pyproject"\n')
    (tmp_path / "testdb.toml").write_text('prefix = "from_toml"\n')
    assert load_settings(tmp_path).prefix == "from_toml"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "testdb.toml").write_text('prefix = "from_toml"\n[clean]\nstrategy = "delete"\n')
    monkeypatch.setenv("TESTDB_PREFIX", "from_env")
    monkeypatch.setenv("TESTDB_CLEAN__STRATEGY", "truncate")
    settings = load_settings(tmp_path)
    assert settings.prefix == "from_env"
    assert settings.clean.strategy == "truncate"


def test_options_override_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTDB_PREFIX", "from_env")
    assert load_settings(tmp_path, {"prefix": "from_cli", "workers": None}).prefix == "from_cli"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text("prefx = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'prefx' in .*testdb\.toml"):
        load_settings(tmp_path)


def test_unknown_nested_key_names_its_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.testdb.clean]\nstrategi = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'clean\.strategi' in .*pyproject\.toml"):
        load_settings(tmp_path)


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text('workers = "many"\n')
    with pytest.raises(ConfigError, match=r"invalid setting 'workers' in .*testdb\.toml"):
        load_settings(tmp_path)


def test_wrong_type_from_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESTDB_CLEAN__STRATEGY", "bogus")
    with pytest.raises(ConfigError, match="TESTDB_CLEAN__STRATEGY"):
        load_settings(tmp_path)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text("prefix = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_bytes(b"prefix = '\xff\xfe'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(tmp_path)


def test_unknown_env_placeholder_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text('[env]\nPOSTGRES_DB = "{databse}"\n')
    with pytest.raises(ConfigError, match=r"unknown placeholder \{databse\} in env\.POSTGRES_DB"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("4h", 14400), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_ttl_accepts_duration_strings(tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text('ttl = "30m"\n')
    assert load_settings(tmp_path).ttl == 1800
