"""Ctrl-C is never lost: while a long command runs, SIGINT both raises KeyboardInterrupt (as Python's own handler
does) and leaves a mark that the command's loops check (`check_interrupt`), so an interrupt that lands in library
code which swallows it (a bare `except:` during a lazy import, say) still stops the command at its next step."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_PENDING = threading.Event()


def _on_sigint(signum: int, frame: object) -> None:
    _PENDING.set()
    raise KeyboardInterrupt


@contextmanager
def catching_sigint() -> Iterator[None]:
    """Install the marking SIGINT handler for the block (main thread only; elsewhere a no-op), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, _on_sigint)
    _PENDING.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        _PENDING.clear()


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived that has not stopped the command yet (called between steps)."""
    if _PENDING.is_set():
        _PENDING.clear()
        raise KeyboardInterrupt
