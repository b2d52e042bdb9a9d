"""Commands testdb starts find the executables installed next to testdb (PATH, as `uv run` does)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from testdb import childenv
from testdb.childenv import child_environment, child_path, own_bin_dir


def test_own_bin_dir_is_the_interpreters_directory() -> None:
    assert own_bin_dir() == Path(sys.executable).parent


def test_bin_dir_goes_first_when_missing() -> None:
    assert child_path({"PATH": "/usr/bin:/bin"}).split(os.pathsep) == [str(own_bin_dir()), "/usr/bin", "/bin"]


def test_path_unchanged_when_bin_dir_already_on_it() -> None:
    path = f"/usr/bin{os.pathsep}{own_bin_dir()}{os.sep}"
    assert child_path({"PATH": path}) == path


def test_another_activated_virtualenv_is_not_shadowed(tmp_path: Path) -> None:
    assert child_path({"PATH": "/usr/bin", "VIRTUAL_ENV": str(tmp_path)}) == "/usr/bin"


def test_our_own_activated_virtualenv_still_gets_its_bin_dir() -> None:
    path = child_path({"PATH": "/usr/bin", "VIRTUAL_ENV": sys.prefix})
    assert path.split(os.pathsep)[0] == str(own_bin_dir())


def test_child_environment_overlays_extra_and_sets_path() -> None:
    env = child_environment({"DATABASE_URL": "postgresql://x/y"})
    assert env["DATABASE_URL"] == "postgresql://x/y"
    assert env["PATH"] == child_path({**os.environ})


def test_a_cli_only_tool_environment_does_not_shadow_the_projects_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(childenv, "is_project_environment", lambda: False)  # pipx / uv tool: no pytest
    assert child_path({"PATH": "/usr/bin"}) == "/usr/bin"


def test_this_test_environment_is_a_project_environment() -> None:
    assert childenv.is_project_environment()
