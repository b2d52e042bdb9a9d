"""Process-level signal policy: interrupts become exceptions while provisioning, and are
held back while tearing down, so a second Ctrl-C can never leave half-dropped databases."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signo: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signo).name)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt (like SIGINT), so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold stop signals until the block ends (they are delivered afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
