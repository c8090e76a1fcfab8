"""The install namespace: everything lives under `affcli`; no top-level cache/common/pipeline/heads/cli module."""
from __future__ import annotations

import subprocess
import sys


def test_only_affcli_namespace_is_importable(tmp_path):
    code = (
        "import importlib.util, affcli.cache, affcli.heads, affcli.pipeline, affcli.pointcloud, affcli.cli\n"
        "leaks = [m for m in ('cache', 'common', 'pipeline', 'heads', 'pointcloud', 'cli') if importlib.util.find_spec(m)]\n"
        "assert not leaks, leaks\n"
        "assert callable(affcli.cache.load_table)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_python_dash_m_affcli_runs_the_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "affcli", "--help"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "train-head" in r.stdout, r.stderr
