from __future__ import annotations

import pytest

from testdb.errors import RunError
from testdb.runner import check_command, numprocesses_from, resolve_workers


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["pytest", "-n", "4"], 4),
        (["pytest", "-n4", "--dist=worksteal"], 4),
        (["pytest", "--numprocesses=3"], 3),
        (["pytest", "--numprocesses", "2"], 2),
        (["python", "-m", "pytest", "-n", "auto"], "auto"),
        ([".venv/bin/pytest", "-n", "logical"], "logical"),
        (["uv", "run", "pytest", "-n", "8"], 8),
        (["pytest", "tests"], None),
        (["make", "-n", "3"], None),
        ([], None),
    ],
)
def test_numprocesses_is_read_from_pytest_commands(command: list[str], expected: object) -> None:
    assert numprocesses_from(command) == expected


def test_explicit_count_wins() -> None:
    assert resolve_workers(4, 2) == 4


def test_default_when_command_says_nothing() -> None:
    assert resolve_workers(None, 3) == 3


def test_auto_means_cpu_count() -> None:
    assert resolve_workers("auto", 3) >= 1


def test_empty_command_is_refused() -> None:
    with pytest.raises(RunError, match="no command"):
        check_command([])


def test_missing_program_is_refused() -> None:
    with pytest.raises(RunError, match="command not found"):
        check_command(["no-such-program-xyz"])
