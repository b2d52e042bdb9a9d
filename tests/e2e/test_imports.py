"""Start-up cost as a property: each command imports only what it needs (issue 13).

The CLI runs in a fresh interpreter; at exit it writes the top-level packages it imported,
and the test names the ones a command must never load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ._cli import child_env

pytest_plugins = ["pytester"]

HEAVY = ("sqlalchemy", "pydantic", "pydantic_settings", "psycopg", "docker")
REPORT = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted({m.split(".")[0] for m in sys.modules}))))
from testdb.cli import main
main()
"""


def imported_by(cwd: Path, *args: str) -> set[str]:
    """Top-level packages imported by ``testdb ARGS`` run in ``cwd``."""
    report = cwd / f"modules-{len(list(cwd.glob('modules-*')))}.json"
    subprocess.run(
        [sys.executable, "-c", REPORT, str(report), *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return set(json.loads(report.read_text()))


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    assert not imported_by(tmp_path, *args) & set(HEAVY)


@pytest.fixture
def run_up(tmp_path: Path, prefix: str) -> Path:
    """A detached run on the local server, in ``tmp_path``."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "testdb"),
            "up",
            "--server",
            "local",
            "-n",
            "1",
            "--prefix",
            prefix,
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tmp_path


@pytest.mark.parametrize("command", ["env", "status", "down"])
def test_env_status_and_down_import_no_sqlalchemy_and_no_docker(run_up: Path, command: str) -> None:
    found = imported_by(run_up, command)
    assert "psycopg" in found  # it really talked to the server
    assert not found & {"sqlalchemy", "docker"}


def test_idle_plugin_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_nothing_heavy_was_imported():
            heavy = {"sqlalchemy", "pydantic", "pydantic_settings", "psycopg", "docker", "typer", "rich"}
            assert not heavy & {m.split(".")[0] for m in sys.modules}
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
