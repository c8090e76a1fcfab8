"""The seeded fault-injection run of bench/fuzz.py, a handful of cases: one damaged file per target (cache, face
records and row extras, teacher targets, prompt embeddings, run folder, prediction files), the damage kinds (junk,
truncation, bit flips) in turn, each read by the commands that use it; every answer is correct or a one-line error (no traceback, hang or
silently different result)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def test_quick_fuzz_gives_only_correct_answers_or_one_line_errors(tmp_path):
    spec = importlib.util.spec_from_file_location("affcli_fuzz", Path(__file__).resolve().parents[1] / "bench" / "fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fuzz  # its dataclasses look their module up
    spec.loader.exec_module(fuzz)
    assert fuzz.main(["--quick", "--quiet", "--out", str(tmp_path / "f.json")]) == 0
    import json

    report = json.loads((tmp_path / "f.json").read_text())
    assert len(report["cases"]) == len(fuzz.TARGETS) and {c["target"] for c in report["cases"]} == set(fuzz.TARGETS)
    assert {c["damage"] for c in report["cases"]} == set(fuzz.DAMAGES)
