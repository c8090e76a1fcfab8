"""Worker processes die with their parent: a killed `affcli` (even by SIGKILL) leaves no orphaned workers."""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, poll_s: float = 1.0) -> None:
    """Call first thing in a worker: the kernel kills it when its parent dies (Linux PR_SET_PDEATHSIG), elsewhere a
    daemon thread exits it within `poll_s`; a parent already gone (the race before this call) exits it at once."""
    parent = parent_pid or _parent_pid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        except (OSError, AttributeError):
            _watch(parent, poll_s)
    else:
        _watch(parent, poll_s)
    if os.getppid() != parent:
        os._exit(1)


def _parent_pid() -> int:
    proc = multiprocessing.parent_process()
    return proc.pid if proc is not None and proc.pid else os.getppid()


def _watch(parent: int, poll_s: float) -> None:
    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=loop, name="die-with-parent", daemon=True).start()
