"""How many CPU threads this process may really use, and torch set to that: CPU affinity, the cgroup CPU quota
(v2 cpu.max, v1 cfs_quota_us), the CPUs other processes leave idle (load average) and OMP_NUM_THREADS all bound
it; more threads than that only oversubscribe (x4 of 2,048 points: 19 s with 2 threads on 2 busy cores, 2.3 s
with 1)."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
BUDGET_ENV = "AFFCLI_THREADS"
LIBRARY_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cgroup_paths(root: Path) -> list[Path]:
    """Candidate cgroup folders of this process (its own v2 path first, then the roots)."""
    paths = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hier, _, rel = line.split(":", 2)
            if hier == "0" and rel.strip("/"):
                paths.append(root / rel.strip("/"))
    except OSError:
        pass
    return paths + [root, root / "cpu", root / "cpu,cpuacct"]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (quota / period), or None when there is no quota."""
    for d in _cgroup_paths(root):
        try:
            if (d / "cpu.max").is_file():
                quota, period = (d / "cpu.max").read_text().split()[:2]
                if quota != "max":
                    return int(quota) / int(period)
                return None
            if (d / "cpu.cfs_quota_us").is_file():
                quota = int((d / "cpu.cfs_quota_us").read_text())
                if quota > 0:
                    return quota / int((d / "cpu.cfs_period_us").read_text())
                return None
        except (OSError, ValueError):
            continue
    return None


def idle_cpus() -> int | None:
    """Host CPUs not taken by runnable work (cpu_count - 1-minute load average), or None where unknown."""
    try:
        return max(1, math.floor((os.cpu_count() or 1) - os.getloadavg()[0] + 0.5))
    except (OSError, AttributeError):
        return None


def usable_cpus(root: Path = CGROUP_ROOT, load_aware: bool = True) -> int:
    """min(affinity, ceil(cgroup quota)), capped by OMP_NUM_THREADS when set, else by the idle CPUs; at least 1."""
    n = _affinity()
    quota = cgroup_cpu_limit(root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return max(1, min(n, int(omp)))
    idle = idle_cpus() if load_aware else None
    return max(1, min(n, idle) if idle is not None else n)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to n (default thread_budget()); returns the number set."""
    import torch

    n = max(1, int(n)) if n else thread_budget()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def thread_budget() -> int:
    """The CPU threads this process's work uses: $AFFCLI_THREADS (`affcli --threads`, exported to child processes
    too) when set, else usable_cpus()."""
    given = os.environ.get(BUDGET_ENV, "").strip()
    return max(1, int(given)) if given.isdigit() and int(given) > 0 else usable_cpus()


@contextmanager
def thread_scope(n: int | None = None) -> Iterator[int]:
    """Run a command within a thread budget of n (default usable_cpus()): exported as $AFFCLI_THREADS and the
    OMP/MKL/OpenBLAS counts, which torch and BLAS read when first imported and child processes inherit. A torch
    already imported is set to n only when n is given (the embedding process chose its own). Restores all on exit."""
    torch = sys.modules.get("torch") if n else None
    n = max(1, int(n)) if n else usable_cpus()
    saved = {k: os.environ.get(k) for k in (BUDGET_ENV, *LIBRARY_ENVS)}
    before = torch.get_num_threads() if torch is not None else None
    os.environ.update({k: str(n) for k in saved})
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if torch is not None and before is not None:
            torch.set_num_threads(before)
