"""common.threads: the thread count follows affinity, cgroup quota (v1 and v2), OMP_NUM_THREADS and idle CPUs."""

from __future__ import annotations

import os

import pytest
import torch

from affcli.common import threads


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_affinity_bounds_without_quota(tmp_path, eight_cpus):
    assert threads.cgroup_cpu_limit(tmp_path) is None
    assert threads.usable_cpus(tmp_path) == 8


def test_cgroup_v2_quota(tmp_path, eight_cpus):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 1.5
    assert threads.usable_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.usable_cpus(tmp_path) == 8


def test_cgroup_v1_quota(tmp_path, eight_cpus):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.usable_cpus(tmp_path) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.usable_cpus(tmp_path) == 8


def test_omp_num_threads_caps_and_overrides_load(tmp_path, eight_cpus, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 7.0, 6.0))
    assert threads.usable_cpus(tmp_path) == 1  # busy host: one idle CPU
    assert threads.usable_cpus(tmp_path, load_aware=False) == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.usable_cpus(tmp_path) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert threads.usable_cpus(tmp_path) == 8


def test_configure_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
        n = threads.configure_threads()
        assert n == torch.get_num_threads() and 1 <= n <= (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
