"""Run a migration tool as a child process and turn a failure into one error line."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from testdb.childenv import child_environment
from testdb.errors import SchemaError
from testdb.servers.base import scrub

OUTPUT_TAIL_LINES = 5


def run_tool(argv: str | Sequence[str], env: Mapping[str, str], root: Path, what: str) -> str:
    """Run ``argv`` (a shell string runs through the shell) in ``root``; its stdout.

    A child process, not an import: the project's env.py / settings configure logging,
    import the application and read the environment, none of which may leak into the
    process running the tests.
    """
    result = subprocess.run(
        argv,
        shell=isinstance(argv, str),
        cwd=root,
        env=child_environment(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-OUTPUT_TAIL_LINES:]
        tail = " | ".join(line.strip() for line in output) or "(no output)"
        raise SchemaError(f"{what} exited with {result.returncode}: {scrub(tail)}")
    return result.stdout
