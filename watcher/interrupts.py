"""Ctrl-C and SIGTERM around work that must not be cut in half (starting or stopping child
processes), for a command run in the foreground (`watcher demo`).

Only the main thread can set signal handlers; elsewhere each of these does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

Handler = Callable[[int, FrameType | None], object] | signal.Handlers
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_on_sigterm() -> Callable[[], None]:
    """Treat SIGTERM like Ctrl-C (so `finally` cleans up); returns what restores the old one."""
    if not _in_main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    return restore


@contextlib.contextmanager
def _stop_signals_to(handler: Handler) -> Iterator[None]:
    """SIGINT and SIGTERM go to `handler` for the block (an ignored one stays ignored)."""
    if not _in_main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, previous in saved.items():
        if previous is not signal.SIG_IGN:
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, previous in saved.items():
            if previous is not None:
                signal.signal(sig, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM until the block is done, then raise KeyboardInterrupt."""
    caught: list[int] = []
    with _stop_signals_to(lambda signum, _frame: caught.append(signum)):
        yield
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While stopping: a second Ctrl-C must not leave children (in their own sessions) behind."""
    with _stop_signals_to(signal.SIG_IGN):
        yield
