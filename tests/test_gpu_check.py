"""bench/gpu_check.py cannot rot: its --dry-run runs every step (decode, faces, kinds, --gpus, heads, grid, point
clouds, stream) on the CPU with tiny sizes, and each must pass and land in the JSON and the RESULTS table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_passes_every_step(tmp_path):
    gc = _module()
    threads = torch.get_num_threads()
    try:
        code = gc.main(["--dry-run", "--out", str(tmp_path / "r.json"), "--work", str(tmp_path / "w")])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "r.json").read_text())
    failed = {k: v.get("error") for k, v in report["steps"].items() if v["status"] != "ok"}
    assert code == 0 and not failed, failed
    assert list(report["steps"]) == [n for n, _ in gc.STEPS]
    assert report["meta"]["dry_run"] and sum(limit for _, limit in gc.STEPS) <= 8 * 60
    table = report["table"]
    for name, _ in gc.STEPS:
        assert f"| {name} |" in table
    assert "no CUDA device" in report["steps"]["gpus"]["result"]["refused_on_cpu"]
    assert report["steps"]["grid"]["result"]["finished"] == 4


def test_without_a_gpu_the_real_check_refuses_in_one_line(capsys):
    if torch.cuda.is_available():
        return
    assert _module().main(["--out", "/dev/null"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dry-run" in err[0]
