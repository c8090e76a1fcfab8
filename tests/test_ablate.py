"""`affcli ablate`: grid expansion and refusal, failure isolation, resume, exact tables, pool vs Dask, demo."""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from affcli.common.runs import read_json, write_json
from affcli.heads.ablate import (GridError, build_report, build_runs, collect, demo_ablation, expand, grid_from_dict,
                          grid_meta, load_grid, run_grid)
from affcli.heads.ablate.run import clear_data_cache, data_loads
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

QUIET = Console(quiet=True)
BASE = {"task": "expr", "features": [VISUAL, AUDIO], "epochs": 1, "device": "cpu", "window": 16, "stride": 16,
        "batch_size": 32, "d_model": 16, "plots": False, "save_predictions": False, "warmup": 0}
NAN = {"epochs": 2}  # lr=1e30 blows the weights up in epoch 1: the loss of epoch 2 is NaN


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-video synthetic cache (visual + audio) with EXPR labels."""
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_videos=4, n_frames=64, dims=(8, 6))


def _grid(axes: dict, base: dict | None = None, **extra) -> dict:
    return {"base": {**BASE, **(base or {})}, "axes": axes, **extra}


def _run(raw: dict, synth, out: Path, **kw):
    grid = grid_from_dict(raw)
    runs = build_runs(grid, *synth)
    return runs, run_grid(runs, out, console=QUIET, grid_meta=grid_meta(grid), progress=False, **kw)


# ---- grid files ----------------------------------------------------------------------------------------
def test_expansion_is_product_minus_exclude_plus_include(tmp_path):
    (tmp_path / "g.toml").write_text(
        '[base]\ntask = "expr"\n[axes]\nfusion = ["none:visual", "concat", "xattn"]\n'
        'temporal = ["mlp", "tcn(levels=2)"]\nseeds = [0, 1]\n'
        '[[exclude]]\nfusion = "xattn"\ntemporal = "tcn"\n'
        '[[include]]\nfusion = "xattn-gated"\ntemporal = "gru"\n')
    (tmp_path / "g.yaml").write_text(
        "base: {task: expr}\naxes:\n  fusion: [none:visual, concat, xattn]\n  temporal: [mlp, tcn(levels=2)]\n"
        "  seeds: [0, 1]\nexclude:\n  - {fusion: xattn, temporal: tcn}\ninclude:\n  - {fusion: xattn-gated, temporal: gru}\n")
    for f in ("g.toml", "g.yaml"):
        assigns = expand(load_grid(tmp_path / f))
        got = {(str(a["fusion"]), str(a["temporal"]), a["seed"]) for a in assigns}
        assert len(assigns) == 3 * 2 * 2 - 2 + 2 == len(got)
        assert ("xattn", "tcn(levels=2)", 0) not in got and ("xattn", "mlp", 1) in got
        assert ("xattn-gated", "gru", 0) in got and ("xattn-gated", "gru", 1) in got


@pytest.mark.parametrize("axes,extra,key,valid", [
    ({"temporal": ["mlp", "lstm"]}, {}, "axes.temporal[1]", "transformer"),
    ({"temporal": ["tcn(levls=3)"]}, {}, "axes.temporal[0]", "levels"),
    ({"loss": ["ce+0.1*text-contrastiv"]}, {}, "axes.loss[0]", "text-contrastive"),
    ({"fusion": ["none:vision"]}, {}, "axes.fusion[0]", "visual"),
    ({"fusion": ["concat"], "temporal": []}, {}, "axes.temporal", None),
    ({"fusion": ["concat"], "dropuot": [0.1]}, {}, "axes.dropuot", "dropout"),
    ({"fusion": ["concat"]}, {"exclude": [{"temporal": "gru"}]}, "exclude[0].temporal", "fusion"),
    ({"fusion": ["concat"]}, {"exclude": [{"fusion": "concat"}]}, "axes", None),
])
def test_bad_grid_refused_with_key_and_valid_names(axes, extra, key, valid, synth, tmp_path):
    with pytest.raises(GridError) as e:
        build_runs(grid_from_dict(_grid(axes, **extra)), *synth)
    assert e.value.key.startswith(key), str(e.value)
    if valid:
        assert valid in e.value.valid, str(e.value)


def test_prompts_axis_sets_prompt_losses_only(synth):
    grid = grid_from_dict(_grid({"loss": ["ce", "ce+0.1*text-contrastive"], "prompts": ["expr8", "expr8-photo"]}))
    runs = build_runs(grid, *synth)
    got = sorted((r.axes["loss"], r.axes["prompts"], r.config["loss"], r.config["prompts"]) for r in runs)
    assert got == [("ce", "—", "ce", None),
                   ("ce+0.1*text-contrastive", "expr8", "ce+0.1*text-contrastive", "expr8"),
                   ("ce+0.1*text-contrastive", "expr8-photo", "ce+0.1*text-contrastive", "expr8-photo")]
    with pytest.raises(GridError) as e:
        build_runs(grid_from_dict(_grid({"loss": ["ce+0.1*text-contrastive"], "prompts": ["va9"]})), *synth)
    assert e.value.key.startswith("axes.prompts[0]") and e.value.valid == ["expr8", "expr8-photo"]


def test_missing_feature_set_refused_by_cli_before_any_run(synth, tmp_path):
    from affcli.cli import app

    grid = tmp_path / "g.toml"
    grid.write_text('[base]\ntask = "expr"\nfeatures = ["clip:ViT-B-16/openai"]\nepochs = 1\n'
                    '[axes]\nfusion = ["none:visual"]\nseeds = [0]\n')
    res = CliRunner().invoke(app, ["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "clip:ViT-B-16/openai" in res.output and VISUAL in res.output and AUDIO in res.output
    assert not (tmp_path / "out").exists()


# ---- execution through the real trainer --------------------------------------------------------------
def test_failure_isolated_resume_and_exact_table(synth, tmp_path):
    out = tmp_path / "abl"
    raw = _grid({"fusion": ["none:visual", "concat"], "lr": [1e-3, 1e30], "seeds": [0]}, NAN)
    clear_data_cache()
    loads = data_loads()
    runs, res = _run(raw, synth, out)
    assert data_loads() - loads == 1, "data must be loaded once per process, not once per run"
    assert res.count("ok") == 2 and res.count("failed") == 2
    for r in runs:
        rd = out / "runs" / r.name
        if r.config["lr"] > 1:
            err = read_json(rd / "error.json")
            assert err["type"] and err["message"] and "Traceback" in err["traceback"]
            assert not (rd / "metrics.json").exists()
        else:
            assert read_json(rd / "metrics.json")["main"] >= 0
    t = build_report(out)[0]
    failed_rows = t.summary.filter(pl.col("lr") == "1e+30")
    assert failed_rows["failed"].to_list() == [1, 1] and failed_rows["main_mean"].null_count() == 2
    assert "FAILED" in t.markdown

    # "kill" mid-grid: one finished run lost, one killed half-way (metrics.json written, never marked finished);
    # then extend the grid by a seed. Only the missing, the killed, the failed and the new runs may run.
    ok = [r for r in runs if r.config["lr"] < 1]
    lost, killed = ok
    import shutil

    shutil.rmtree(out / "runs" / lost.name)
    meta = read_json(out / "runs" / killed.name / "ablate.json")
    write_json(out / "runs" / killed.name / "ablate.json", {**meta, "finished": False})
    raw2 = _grid({"fusion": ["none:visual", "concat"], "lr": [1e-3, 1e30], "seeds": [0, 1]}, NAN)
    untouched = {r.name: os.stat(out / "runs" / r.name / "metrics.json").st_mtime_ns for r in ok if r is not lost and r is not killed}
    runs2, res2 = _run(raw2, synth, out)
    ran = {o.name for o in res2.ran}
    assert lost.name in ran and killed.name in ran
    assert {o.name for o in res2.outcomes if o.status == "skipped"} == set(untouched)
    assert len(ran) == 8 - len(untouched)
    for name, mtime in untouched.items():
        assert os.stat(out / "runs" / name / "metrics.json").st_mtime_ns == mtime

    # the table's mean and std are those of the runs' metrics.json files (sample std, ddof=1)
    t = build_report(out)[0]
    for row in t.summary.filter(pl.col("n") > 0).iter_rows(named=True):
        vals = [read_json(out / "runs" / r.name / "metrics.json")["main"] for r in runs2
                if r.axes["fusion"] == row["fusion"] and r.axes["lr"] == row["lr"]]
        assert len(vals) == 2 == row["n"]
        assert row["main_mean"] == pytest.approx(statistics.mean(vals), abs=1e-12)
        assert row["main_std"] == pytest.approx(statistics.stdev(vals), abs=1e-12)
        if vals[0] != vals[1]:
            assert row["main_std"] != pytest.approx(statistics.pstdev(vals))
        assert f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" in t.markdown
    assert (out / "ablation.csv").exists() and (out / "ablation.png").stat().st_size > 1000
    assert "\\toprule" in (out / "ablation.tex").read_text() and "\\textbf{" in t.latex

    from affcli.cli import app

    rep = CliRunner().invoke(app, ["ablate", "report", str(out)])
    assert rep.exit_code == 0, rep.output
    assert collect(out).filter(pl.col("status") == "ok").height == 4


def test_pool_and_dask_give_the_same_table(synth, tmp_path):
    raw = _grid({"fusion": ["none:visual", "xattn"], "seeds": [0, 1]})
    _, a = _run(raw, synth, tmp_path / "pool", jobs=2)
    _, b = _run(raw, synth, tmp_path / "dask", dask_local=2)
    assert a.count("ok") == b.count("ok") == 4
    ta, tb = build_report(tmp_path / "pool")[0], build_report(tmp_path / "dask")[0]
    assert ta.summary.equals(tb.summary), (ta.markdown, tb.markdown)


def test_cli_runs_grid_and_exit_status_reports_failures(synth, tmp_path):
    from affcli.cli import app

    grid = tmp_path / "g.toml"
    grid.write_text('[base]\ntask = "expr"\nfeatures = ["%s", "%s"]\nepochs = 2\nwarmup = 0\nwindow = 16\n'
                    'plots = false\n[axes]\nfusion = ["none:audio"]\nlr = [1e-3, 1e30]\nseeds = [0]\n' % (VISUAL, AUDIO))
    res = CliRunner().invoke(app, ["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.output and "main=" in res.output and "1 ok, 1 failed" in res.output


def test_demo_ablation_is_fast(synth, tmp_path):
    t = time.perf_counter()
    table = demo_ablation(synth[0], synth[1], tmp_path / "demo", console=QUIET)
    assert time.perf_counter() - t < 90
    for setting in ("none:visual", "none:audio", "xattn"):
        assert setting in table
    assert "±" in table and "**" in table
