"""Settings: ``testdb.toml`` or ``[tool.testdb]`` in ``pyproject.toml``, then ``TESTDB_*``
environment variables, then command-line options (each overriding the one before).

Nested tables map to ``TESTDB_<TABLE>__<KEY>`` variables, e.g. ``TESTDB_CLEAN__STRATEGY``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from testdb.configfile import (
    CONFIG_FILE,
    ENV_PREFIX,
    PYPROJECT,
    find_config_file,
    read_config_table,
    read_toml,
)
from testdb.envvars import check_env_template
from testdb.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "SERVER_KINDS",
    "Settings",
    "find_config_file",
    "load_settings",
    "read_config_table",
]


ServerKind = Literal["auto", "url", "local", "embedded", "docker"]
SERVER_KINDS: tuple[str, ...] = ("auto", "url", "local", "embedded", "docker")

_config_file: ContextVar[Path | None] = ContextVar("testdb_config_file", default=None)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SchemaSettings(_Section):
    """How the template database gets its schema (see the template section of the README)."""

    sql: list[str] = Field(default_factory=list)
    command: str | None = None
    callable: str | None = None
    inputs: list[str] = Field(default_factory=list)
    # Migration-aware templates (testdb.migrations): keyed by the revision chain, extended
    # by cloning an older template and applying only the new revisions.
    alembic: str | None = None  # the alembic.ini
    alembic_version_locations: list[str] = Field(default_factory=list)
    django: str | None = None  # settings module; "env" = $DJANGO_SETTINGS_MODULE
    keep_templates: int = Field(default=5, ge=1)

    @property
    def configured(self) -> bool:
        return bool(self.sql or self.command or self.callable or self.alembic or self.django)


class CleanSettings(_Section):
    """How ``testdb clean`` and the cleaning fixtures empty a database."""

    strategy: Literal["delete", "truncate", "auto"] = "auto"
    reset_sequences: bool = False
    keep: list[str] = Field(default_factory=lambda: ["alembic_version"])
    lock_timeout: float = Field(default=5.0, gt=0)


class RedisSettings(_Section):
    """Per-worker Redis database numbers (see the README's mapping)."""

    url: str | None = None
    first_db: int = Field(default=0, ge=0)
    serial_db: int | None = Field(default=None, ge=0)


class DockerSettings(_Section):
    image: str = "postgres:16-alpine"
    reuse: bool = False
    start_timeout: float = Field(default=60.0, gt=0)


class EmbeddedSettings(_Section):
    """The throwaway cluster testdb starts itself."""

    keep: bool = False
    bin_dir: str | None = None
    run_as: str | None = None
    start_timeout: float = Field(default=30.0, gt=0)


class AdmissionSettings(_Section):
    """Connection admission on a shared server (docs/shared-server.md)."""

    wait: float = Field(default=600.0, ge=0, description="seconds a run waits for its connections")

    @field_validator("wait", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value


class FreshSettings(_Section):
    """The pool behind the ``testdb_fresh_*`` fixtures (one per test process)."""

    pool_size: int = Field(default=4, ge=2)
    max_pool_size: int = Field(default=16, ge=2)
    parallel: int = Field(default=2, ge=1)
    keep_failed: float = Field(default=24 * 3600, ge=0)
    timeout: float = Field(default=60.0, gt=0)

    @field_validator("keep_failed", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value


class PytestSettings(_Section):
    provision: bool = False
    settings_cache_clear: list[str] = Field(default_factory=list)


with warnings.catch_warnings():
    # A field called "schema" shadows a deprecated BaseModel method; the name is the
    # user-facing table name ([schema]) so it is worth the warning we silence here.
    warnings.simplefilter("ignore")

    class Settings(BaseSettings):
        """Every testdb setting; ``config.example.toml`` documents each one."""

        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
            extra="forbid",
            pyproject_toml_table_header=("tool", "testdb"),
            validate_default=True,
        )

        server: ServerKind = "auto"
        url: str | None = None
        prefix: str = "test"
        workers: int | None = Field(default=None, ge=1)
        names: Literal["plain", "unique"] = "plain"
        async_driver: Literal["asyncpg", "psycopg"] = "asyncpg"
        ttl: float = Field(default=4 * 3600, gt=0, description="lease of a detached `up`, seconds")
        prune: bool = True
        grace: float = Field(default=10.0, gt=0)
        state_dir: str = ".testdb"
        max_connections_headroom: int = Field(default=5, ge=0)
        admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
        embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
        docker: DockerSettings = Field(default_factory=DockerSettings)
        schema: SchemaSettings = Field(default_factory=SchemaSettings)  # type: ignore[assignment]
        clean: CleanSettings = Field(default_factory=CleanSettings)
        redis: RedisSettings = Field(default_factory=RedisSettings)
        pytest: PytestSettings = Field(default_factory=PytestSettings)
        fresh: FreshSettings = Field(default_factory=FreshSettings)
        env: dict[str, str] = Field(default_factory=dict)

        @field_validator("ttl", mode="before")
        @classmethod
        def _duration(cls, value: object) -> object:
            return parse_duration(value) if isinstance(value, str) else value

        @field_validator("env")
        @classmethod
        def _env_templates(cls, value: dict[str, str]) -> dict[str, str]:
            for name, template in value.items():
                check_env_template(name, template)
            return value

        @model_validator(mode="after")
        def _clean_keep_unique(self) -> Settings:
            self.clean.keep = list(dict.fromkeys(self.clean.keep))
            return self

        _source: Path | None = PrivateAttr(default=None)

        @property
        def source_file(self) -> Path | None:
            """The config file these settings were read from, if any."""
            return self._source

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            path = _config_file.get()
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None and path.name == PYPROJECT:
                sources.append(PyprojectTomlConfigSettingsSource(settings_cls, toml_file=path))
            elif path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '4h', '2d' -> seconds."""
    match = _DURATION_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 4h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@contextmanager
def _using_config_file(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def load_settings(cwd: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings for a run in ``cwd``; ``overrides`` are command-line options (None = not given)."""
    path = find_config_file(cwd or Path.cwd())
    if path is not None:
        read_toml(path)  # surfaces syntax and encoding errors with the file's name
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        with _using_config_file(path), warnings.catch_warnings():
            # pydantic-settings warns that the pyproject table header is unused when the
            # config comes from testdb.toml or nowhere; that is expected here.
            warnings.filterwarnings("ignore", message=".*pyproject_toml_table_header.*")
            settings = Settings(**given)
    except ValidationError as exc:
        raise _config_error(exc, path, given) from None
    settings._source = path
    return settings


def _config_error(exc: ValidationError, path: Path | None, given: Mapping[str, Any]) -> ConfigError:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    top = str(first["loc"][0]) if first["loc"] else ""
    env_name = ENV_PREFIX + key.upper().replace(".", "__")
    if top in given:
        where = f"option --{top.replace('_', '-')}"
    elif env_name in os.environ or f"{ENV_PREFIX}{top.upper()}" in os.environ:
        where = f"environment variable {env_name if env_name in os.environ else ENV_PREFIX + top.upper()}"
    else:
        where = str(path) if path else "settings"
    if first["type"] == "extra_forbidden":
        return ConfigError(f"unknown setting '{key}' in {where}")
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"invalid setting '{key}' in {where}: {message}")
