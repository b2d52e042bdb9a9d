"""Binaries the embedded server's account cannot reach are copied into a safe, readable cache.

The installations here are small fake trees (scripts named postgres and initdb): what is
checked is reachability by another account and the safety of the copy, not PostgreSQL.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testdb.errors import EmbeddedError
from testdb.servers import reachable

NOBODY = pwd.getpwnam("nobody")
needs_other_account = pytest.mark.skipif(os.geteuid() == NOBODY.pw_uid, reason="runs as nobody")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp that every account can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="testdb-reach-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path)


def fake_install(parent: Path) -> Path:
    """A wheel-like layout: site/pkg/pginstall/{bin,lib,share} and site/pkg.libs; returns bin."""
    root = parent / "site" / "pkg" / "pginstall"
    for part in ("bin", "lib", "share"):
        (root / part).mkdir(parents=True)
    (parent / "site" / "pkg.libs").mkdir()
    (parent / "site" / "pkg.libs" / "libpq.so").write_text("lib")
    for name in ("postgres", "initdb"):
        (root / "bin" / name).write_text(f"#!/bin/sh\necho {name}\n")
        (root / "bin" / name).chmod(0o755)
    (root / "share" / "postgres.bki").write_text("bki")
    return root / "bin"


@needs_other_account
def test_installation_in_an_open_tree_is_used_as_is(open_dir: Path) -> None:
    bin_dir = fake_install(open_dir)
    assert reachable.reachable_bin_dir(bin_dir, "18.0", NOBODY) == (bin_dir, False)


@needs_other_account
def test_a_0700_ancestor_makes_binaries_unreachable(open_dir: Path) -> None:
    secret = open_dir / "secret"
    bin_dir = fake_install(secret)
    secret.chmod(0o700)
    assert not reachable.can_run(bin_dir, NOBODY)


@needs_other_account
def test_unreachable_binaries_are_copied_readable_and_root_only_writable(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = open_dir / "secret"
    bin_dir = fake_install(secret)
    secret.chmod(0o700)
    monkeypatch.setattr(reachable, "CACHE_BASES", (open_dir / "cache",))
    copied, made = reachable.reachable_bin_dir(bin_dir, "18.0", NOBODY)
    assert made
    assert copied.is_relative_to(open_dir / "cache")
    assert reachable.can_run(copied, NOBODY)
    assert (copied.parents[2] / "pkg.libs" / "libpq.so").read_text() == "lib"  # RPATH layout kept
    for path in [open_dir / "cache", *(open_dir / "cache").rglob("*")]:
        assert not path.lstat().st_mode & 0o022, path
        assert path.lstat().st_uid == os.geteuid()


@needs_other_account
def test_the_copy_is_made_once_and_reused(open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = open_dir / "secret"
    bin_dir = fake_install(secret)
    secret.chmod(0o700)
    monkeypatch.setattr(reachable, "CACHE_BASES", (open_dir / "cache",))
    first = reachable.reachable_bin_dir(bin_dir, "18.0", NOBODY)
    second = reachable.reachable_bin_dir(bin_dir, "18.0", NOBODY)
    assert (first[1], second[1]) == (True, False)
    assert first[0] == second[0]
    assert [p.name for p in (open_dir / "cache").iterdir()] == [first[0].parents[2].name]  # no staging left


@needs_other_account
def test_a_planted_symlink_is_not_trusted_as_the_cache(
    open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = open_dir / "secret"
    bin_dir = fake_install(secret)
    secret.chmod(0o700)
    (open_dir / "elsewhere").mkdir()
    (open_dir / "cache").symlink_to(open_dir / "elsewhere")
    monkeypatch.setattr(reachable, "CACHE_BASES", (open_dir / "cache",))
    with pytest.raises(EmbeddedError, match="no safe directory"):
        reachable.reachable_bin_dir(bin_dir, "18.0", NOBODY)
    assert list((open_dir / "elsewhere").iterdir()) == []


@needs_other_account
def test_a_group_writable_cache_is_not_trusted(open_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = open_dir / "secret"
    bin_dir = fake_install(secret)
    secret.chmod(0o700)
    (open_dir / "cache").mkdir(mode=0o775)
    (open_dir / "cache").chmod(0o775)
    monkeypatch.setattr(reachable, "CACHE_BASES", (open_dir / "cache",))
    with pytest.raises(EmbeddedError, match="no safe directory"):
        reachable.reachable_bin_dir(bin_dir, "18.0", NOBODY)
    assert stat.S_IMODE((open_dir / "cache").stat().st_mode) == 0o775
