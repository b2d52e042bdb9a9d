"""The environment a run hands to tests, and its output formats.

Variables (serial database unless named per worker):

- ``DATABASE_URL``, ``TEST_DATABASE_URL``: ``postgresql://`` (libpq form; works with psycopg,
  asyncpg, dj-database-url and SQLAlchemy with psycopg2).
- ``DATABASE_URL_ASYNC``: SQLAlchemy async form, ``postgresql+asyncpg://`` (or
  ``postgresql+psycopg://`` with ``async_driver = "psycopg"``).
- ``TESTDB_WORKER_URL_GW<N>``: worker N's database; ``TESTDB_WORKERS``; ``TESTDB_RUN_ID``.
- ``REDIS_URL`` and ``TESTDB_WORKER_REDIS_URL_GW<N>`` when ``redis.url`` is set.
- ``TESTDB_POOL_SIZE`` / ``TESTDB_MAX_OVERFLOW``: the per-worker connection budget.
- every ``[env]`` template, rendered for the serial database.

Env output is the one place passwords appear: it is what connects the tests. Everything
else (status, errors, logs) goes through :func:`mask_url`.
"""

from __future__ import annotations

import json
import secrets
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from testdb.errors import ConfigError
from testdb.urls import PgUrl, make_url, with_driver

OutputFormat = Literal["shell", "dotenv", "json", "github"]
OUTPUT_FORMATS: tuple[str, ...] = ("shell", "dotenv", "json", "github")
WORKER_URL_VAR = "TESTDB_WORKER_URL_"
WORKER_REDIS_VAR = "TESTDB_WORKER_REDIS_URL_"

#: Placeholders an ``[env]`` template may use; ``{url:DRIVER}`` takes a driver name.
ENV_PLACEHOLDERS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "database",
        "worker",
        "run_id",
        "url",
        "redis_url",
        "redis_db",
    }
)
_FORMATTER = string.Formatter()
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword", "passfile"})


@dataclass(frozen=True)
class Target:
    """One database the environment points at (the serial one, or one worker's)."""

    url: PgUrl
    worker: str
    run_id: str
    redis_url: str | None = None
    redis_db: int | None = None


def check_env_template(name: str, template: str) -> None:
    """Raise ConfigError unless ``template`` uses only known placeholders."""
    try:
        fields = [(f, spec) for _, f, spec, _ in _FORMATTER.parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"invalid template for env.{name}: {exc}") from None
    for field, spec in fields:
        if field not in ENV_PLACEHOLDERS:
            raise ConfigError(
                f"unknown placeholder {{{field}}} in env.{name}",
                hint="placeholders: " + ", ".join(sorted(ENV_PLACEHOLDERS)) + ", {url:DRIVER}",
            )
        if spec and field != "url":
            raise ConfigError(f"placeholder {{{field}:{spec}}} in env.{name} takes no format")


def mask_url(url: PgUrl | str) -> str:
    """A URL safe to print: the password (also one given as a query parameter) replaced by ***."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except ConfigError:
            return "<unparseable URL>"
    secrets_in_query = {k: "***" for k in url.query if k.lower() in SECRET_QUERY_KEYS}
    return url.set(query={**url.query, **secrets_in_query}).render_as_string(hide_password=True)


def render_template(template: str, target: Target) -> str:
    """Render one ``[env]`` template for ``target``."""
    url = target.url
    host = url.host or str(url.query.get("host", ""))
    values: dict[str, object] = {
        "host": host,
        "port": url.port or 5432,
        "user": url.username or "",
        "password": url.password or "",
        "database": url.database or "",
        "worker": target.worker,
        "run_id": target.run_id,
        "redis_url": target.redis_url or "",
        "redis_db": "" if target.redis_db is None else target.redis_db,
    }
    out: list[str] = []
    for literal, field, spec, _ in _FORMATTER.parse(template):
        out.append(literal)
        if field is None:
            continue
        out.append(with_driver(url, spec or None) if field == "url" else str(values[field]))
    return "".join(out)


def target_environment(
    target: Target,
    templates: Mapping[str, str],
    async_driver: str = "asyncpg",
) -> dict[str, str]:
    """Variables that point an application at ``target``'s database (and Redis)."""
    env = {
        "DATABASE_URL": with_driver(target.url, None),
        "TEST_DATABASE_URL": with_driver(target.url, None),
        "DATABASE_URL_ASYNC": with_driver(target.url, async_driver),
    }
    if target.redis_url:
        env["REDIS_URL"] = target.redis_url
    env.update({name: render_template(tpl, target) for name, tpl in templates.items()})
    return env


def run_environment(
    serial: Target,
    workers: Mapping[str, Target],
    templates: Mapping[str, str],
    async_driver: str = "asyncpg",
    pool: tuple[int, int] | None = None,
) -> dict[str, str]:
    """Everything ``testdb up``/``env``/``run`` hands out for one run."""
    env = target_environment(serial, templates, async_driver)
    env["TESTDB_RUN_ID"] = serial.run_id
    env["TESTDB_WORKERS"] = str(len(workers))
    for worker_id, target in workers.items():
        env[WORKER_URL_VAR + worker_id.upper()] = with_driver(target.url, None)
        if target.redis_url:
            env[WORKER_REDIS_VAR + worker_id.upper()] = target.redis_url
    if pool is not None:
        env["TESTDB_POOL_SIZE"], env["TESTDB_MAX_OVERFLOW"] = str(pool[0]), str(pool[1])
    return env


def replacement_environment(admin_url: PgUrl, template: str, prefix: str, unique: bool) -> dict[str, str]:
    """What a worker needs to clone its own database if xdist replaces a crashed worker."""
    return {
        "TESTDB_ADMIN_URL": with_driver(admin_url, None),
        "TESTDB_TEMPLATE": template,
        "TESTDB_PREFIX": prefix,
        "TESTDB_UNIQUE": "1" if unique else "0",
    }


def format_environment(env: Mapping[str, str], fmt: str) -> str:
    """Render ``env`` as shell exports, a dotenv file, one JSON object, or $GITHUB_ENV lines."""
    if fmt == "shell":
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    if fmt == "dotenv":
        # Single quotes: python-dotenv and docker compose take them literally (no ${} expansion);
        # only backslash and the quote itself need escaping.
        return "".join(f"{k}='{_dotenv_escape(v)}'\n" for k, v in env.items())
    if fmt == "json":
        return json.dumps(dict(env), indent=2) + "\n"
    if fmt == "github":
        return "".join(_github_line(k, v) for k, v in env.items())
    raise ConfigError(f"unknown format {fmt!r}", hint="formats: " + ", ".join(OUTPUT_FORMATS))


def _dotenv_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _github_line(name: str, value: str) -> str:
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"ghadelimiter_{secrets.token_hex(8)}"  # GitHub's own multi-line syntax
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"
