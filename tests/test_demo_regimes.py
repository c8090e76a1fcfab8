"""`affcli demo --regimes-only` on a small demo (3 videos x 2 s): each regime of issue 11 runs once and prints its
one-line summary (LSD images, SSL + linear probe, distillation, post-processing, causal forecasting + stream)."""
from __future__ import annotations

import re

from typer.testing import CliRunner

from affcli.cli import app


def _number(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text}"
    return float(m.group(1))


def test_demo_regimes_only(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--videos", "3", "--seconds", "2", "--regimes-only"])
    assert res.exit_code == 0, res.output
    text = res.output
    lines = [ln for ln in text.splitlines() if re.search(r"\(\d+\.\d s\)$", ln)]
    assert [ln.split(":")[0] for ln in lines] == ["LSD images", "SSL pretrain + linear probe (synthetic LSD features, 5 "
                                                  "labels/class)", "distillation", "post-processing (interpolate "
                                                  "linear)", "causal forecasting"], text
    assert _number(text, r"48 PNGs in 6 class folders .* val acc (\d\.\d+)") >= 0.75
    random, ssl = _number(text, r"probe F1 random (\d\.\d+)"), _number(text, r"-> SimCLR (\d\.\d+)")
    assert ssl > random + 0.1
    assert _number(text, r"teacher targets cached for (\d+) teacher x video") == 3 * 3
    assert _number(text, r"AU (\d\.\d+) -> ") <= _number(text, r"AU \d\.\d+ -> (\d\.\d+)")
    assert _number(text, r"stream of demo\d+: (\d+) frames") == 50
    assert _number(text, r"max \|stream - predict\| (\d\.\de[-+]\d+)") < 1e-3
    assert not (out / "runs").exists() and not (out / "ablation").exists()
    for d in ("lsd_images/images.zarr", "ssl/pretrain-aware", "distill/distill", "postprocess/au", "causal", "causal_pred"):
        assert (out / "regimes" / d).exists(), d
