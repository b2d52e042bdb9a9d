"""Run the installed ``testdb`` in a subprocess and read exactly what it prints.

Every end-to-end test goes through :func:`run` (or :func:`start` for a process the test
signals). The child gets the caller's environment minus anything that would configure
testdb from outside the test (``TESTDB_*``, ``DATABASE_URL``, ``TEST_DATABASE_URL``, a
terminal width), so a test sees only the settings it passes itself.

Bytecode: when ``PYTHONDONTWRITEBYTECODE`` is set, every ``testdb`` start recompiles
SQLAlchemy and pydantic from source (several seconds each). The child writes its bytecode
to a private cache under the temp directory instead (``PYTHONPYCACHEPREFIX``), which
leaves the source tree untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

TESTDB = Path(sys.executable).parent / "testdb"
PYCACHE = Path(tempfile.gettempdir()) / "testdb-e2e-pycache"
TIMEOUT_S = 120

ERROR_PREFIX = "testdb: error:"
HINT_PREFIX = "hint:"

#: Variables from the outer environment that would change what testdb does.
_OUTER_SETTINGS = ("DATABASE_URL", "DATABASE_URL_ASYNC", "TEST_DATABASE_URL", "COLUMNS", "LINES")


class Result(NamedTuple):
    """One finished ``testdb`` invocation; unpacks as ``(code, stdout, stderr)``."""

    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        """stdout and stderr together (for "never printed anywhere" checks)."""
        return self.out + self.err

    def lines(self, prefix: str) -> list[str]:
        """The stderr lines that start with ``prefix``."""
        return [line for line in self.err.splitlines() if line.startswith(prefix)]

    @property
    def error(self) -> str:
        """The one ``testdb: error:`` line (empty if there is none)."""
        found = self.lines(ERROR_PREFIX)
        return found[0] if found else ""


#: The ``cli`` fixture: ``cli("up", "-n", "3", env={...}, cwd=...)`` -> Result.
Cli = Callable[..., Result]


def child_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment for a ``testdb`` child; ``None`` values in ``extra`` remove a name."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TESTDB_") and name not in _OUTER_SETTINGS
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str | None] | None = None,
    timeout: float = TIMEOUT_S,
) -> Result:
    """Run ``testdb ARGS`` in ``cwd`` to completion; (exit code, stdout, stderr)."""
    done = subprocess.run(
        [str(TESTDB), *args],
        cwd=cwd,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def _default_sigint() -> None:
    # A background job of a non-interactive shell (or a CI runner) may have SIGINT
    # ignored, and an ignored signal stays ignored across exec: restore the default so
    # the process under test behaves as it would at a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(
    args: Sequence[str], cwd: Path, env: Mapping[str, str | None] | None = None
) -> subprocess.Popen[str]:
    """Start ``testdb ARGS`` in ``cwd`` without waiting (for tests that signal it)."""
    return subprocess.Popen(
        [str(TESTDB), *args],
        cwd=cwd,
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads start children here
    )


def finish(proc: subprocess.Popen[str], timeout: float = TIMEOUT_S) -> Result:
    """Wait for a process from :func:`start` and collect what it printed."""
    out, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, out, err)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def assert_refused(result: Result, says: str = "") -> None:
    """The shape of every user error: exit 2, one error line, one hint, nothing else.

    ``says`` is a fragment the error line must contain (case-insensitive).
    """
    assert "Traceback" not in result.output, result.output
    assert result.code == 2, result
    assert len(result.lines(ERROR_PREFIX)) == 1, result.err
    assert len(result.lines(HINT_PREFIX)) == 1, result.err
    assert result.err.splitlines() == [result.error, result.lines(HINT_PREFIX)[0]], result.err
    assert result.out == "", "an error must not print an environment to stdout"
    assert says.lower() in result.error.lower(), result.error
