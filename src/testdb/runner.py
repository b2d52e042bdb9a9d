"""Run the child command with the run's environment, forward signals, escalate if ignored.

Signals are blocked in testdb and collected with ``sigtimedwait`` so that testdb knows who
sent each one: a SIGINT typed at the terminal already reached the child (same process
group), so it is not sent twice; a SIGINT or SIGTERM sent to testdb alone (``kill``, a CI
runner) is forwarded. If the child is still running ``grace`` seconds after a forwarded
signal, it gets SIGTERM, then SIGKILL: teardown must never wait forever.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from testdb.childenv import child_environment, child_path
from testdb.errors import RunError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SI_USER, SI_QUEUE, SI_TKILL = (
    0,
    -1,
    -6,
)  # si_code values of signals sent by a process (kill, sigqueue, tgkill)
POLL_S = 0.05
WRAPPERS = ("uv", "poetry", "pdm", "hatch", "pipenv")  # `uv run pytest -n 4`


@dataclass
class ChildResult:
    returncode: int
    interrupted: bool  # a signal asked us to stop


def numprocesses_from(command: Sequence[str]) -> int | str | None:
    """The worker count a pytest command asks xdist for (``-n 4``, ``-n4``, ``--numprocesses=4``).

    Returns an int, 'auto'/'logical', or None when the command is not pytest with -n.
    """
    if not command:
        return None
    program = os.path.basename(command[0])
    args = list(command[1:])
    if program in WRAPPERS and args[:1] == ["run"]:
        return numprocesses_from(args[1:])
    if program.startswith("python") and args[:2] == ["-m", "pytest"]:
        args = args[2:]
    elif program not in ("pytest", "py.test"):
        return None
    value: str | None = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-n", "--numprocesses") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--numprocesses="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-n") and len(arg) > 2 and not arg.startswith("--"):
            value = arg[2:]
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    return value if value in ("auto", "logical") else None


def resolve_workers(value: int | str | None, default: int | None) -> int:
    if isinstance(value, int):
        return value
    if value in ("auto", "logical") or default is None:
        return os.cpu_count() or 1
    return default


def check_command(command: Sequence[str]) -> None:
    if not command:
        raise RunError("no command to run", hint="usage: testdb run [-n N] -- COMMAND [ARGS...]")
    if os.sep not in command[0] and shutil.which(command[0], path=child_path(os.environ)) is None:
        raise RunError(f"command not found: {command[0]}", hint="check the command after '--' and your PATH")


def run_child(command: Sequence[str], env: Mapping[str, str], grace: float) -> ChildResult:
    """Run ``command`` to completion; returns its exit code (128+N if killed by signal N)."""
    # SIGCHLD is collected too, so the wait below ends the moment the child exits.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED, signal.SIGCHLD))
    try:
        try:
            child = subprocess.Popen(
                list(command),
                env=child_environment(env),
                preexec_fn=lambda: _child_signals(old_mask),  # noqa: PLW1509
            )
        except OSError as exc:
            raise RunError(f"cannot run {shlex.join(command)}: {exc.strerror}") from None
        return _supervise(child, grace)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _child_signals(mask: set[int | signal.Signals]) -> None:
    """In the child before exec: testdb's mask, and default SIGINT/SIGTERM handling even when
    testdb itself was started with them ignored (``testdb run … &`` in a script)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for signo in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signo, signal.SIG_DFL)


def _supervise(child: subprocess.Popen[bytes], grace: float) -> ChildResult:
    interrupted = False
    escalate_at: float | None = None
    escalation = [signal.SIGTERM, signal.SIGKILL]
    while child.poll() is None:
        info = signal.sigtimedwait((*FORWARDED, signal.SIGCHLD), POLL_S)
        now = time.monotonic()
        if info is not None and info.si_signo != signal.SIGCHLD:
            interrupted = True
            if info.si_code in (SI_USER, SI_QUEUE, SI_TKILL) and info.si_pid != child.pid:
                _send(child, info.si_signo)
            escalate_at = escalate_at or now + grace
        if escalate_at is not None and now >= escalate_at and escalation:
            _send(child, escalation.pop(0))
            escalate_at = now + grace
    code = child.returncode
    return ChildResult(128 - code if code < 0 else code, interrupted)


def _send(child: subprocess.Popen[bytes], signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signo)
