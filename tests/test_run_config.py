"""One run config: the model nested in RunConfig, flat keys mapped in one place, CLI options generated from the
config dataclasses, and run folders that work from any directory."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from affcli.cli import app
from affcli.common.cli_options import field_options
from affcli.heads.ablate.grid import GridError, grid_from_dict
from affcli.synthetic.features import VISUAL, make_synthetic
from affcli.heads.config import RunConfig
from affcli.heads.config import ModelSpec
from affcli.pointcloud.train import TrainConfig

torch.set_num_threads(1)
RECIPES = sorted((Path(__file__).parents[1] / "heads" / "recipes").glob("*.toml"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("run_config"), n_videos=6, n_frames=60, dims=(12, 8))


def _command(*names: str):
    cmd = typer.main.get_command(app)
    for n in names:
        cmd = cmd.commands[n]
    return cmd


def test_flat_keys_map_into_the_model_table():
    flat = RunConfig.from_dict({"task": "va", "d_model": 64, "temporal_options": {"levels": 2}, "head_hidden": [8]})
    nested = RunConfig.from_dict({"task": "va", "model": {"d_model": 64, "temporal_options": {"levels": 2},
                                                          "head_hidden": [8]}})
    assert flat == nested and flat.model.d_model == 64 and flat.model.head_hidden == [8]
    d = flat.to_dict()
    assert d["model"]["d_model"] == 64 and "d_model" not in d and RunConfig.from_dict(d) == flat
    assert RunConfig.flatten(d)["temporal_options"] == {"levels": 2} and "model" not in RunConfig.flatten(d)
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == flat
    with pytest.raises(ValueError, match="d_model is given twice"):
        RunConfig.from_dict({"d_model": 64, "model": {"d_model": 32}})
    with pytest.raises(ValueError, match="unknown model key 'depth'; valid keys: temporal"):
        RunConfig.from_dict({"model": {"depth": 3}})
    with pytest.raises(ValueError, match="unknown run-config key 'epoch'; valid keys: .*d_model"):
        RunConfig.from_dict({"epoch": 3})
    assert RunConfig.from_dict({"dilation": 2}).model.label_position == "last"
    with pytest.raises(ValueError, match="dilation and horizon need label_position"):
        RunConfig.from_dict({"dilation": 2, "label_position": "frame"})


def test_config_file_nested_or_flat_with_flag_overrides(tmp_path):
    nested, flat = tmp_path / "nested.toml", tmp_path / "flat.json"
    nested.write_text('task = "au"\nepochs = 2\n[model]\nd_model = 16\n[model.temporal_options]\nlevels = 2\n')
    flat.write_text(json.dumps({"task": "au", "epochs": 2, "d_model": 16, "temporal_options": {"levels": 2}}))
    a, b = RunConfig.load(nested, dropout=0.3, lr=None), RunConfig.load(flat, dropout=0.3)
    assert a == b and a.model.d_model == 16 and a.model.dropout == 0.3 and a.model.temporal_options == {"levels": 2}
    assert RunConfig.load(nested, model={"d_model": 8}).model.d_model == 8
    bad = tmp_path / "bad.toml"
    bad.write_text('d_model = 16\n[model]\nd_model = 8\n')
    with pytest.raises(ValueError, match="bad.toml: run-config d_model is given twice"):
        RunConfig.load(bad)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipes_read_the_same_nested_or_flat(path, tmp_path):
    cfg = RunConfig.load(path)
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(RunConfig.flatten(cfg.to_dict())))
    assert RunConfig.load(flat) == cfg and cfg.model != ModelSpec()


def test_grid_base_model_table_is_flattened_for_the_axes():
    g = grid_from_dict({"base": {"task": "expr", "model": {"d_model": 8}}, "axes": {"temporal": ["mlp"]}})
    assert g.base == {"task": "expr", "d_model": 8}
    with pytest.raises(GridError, match="base: run-config d_model is given twice"):
        grid_from_dict({"base": {"d_model": 8, "model": {"d_model": 16}}, "axes": {"seed": [0]}})


def test_every_run_config_key_is_a_train_head_option_with_its_default():
    params = {p.name: p for p in _command("train-head").params}
    assert set(params) == {*RunConfig.keys(), "config", "overwrite"}
    defaults = {**{k: v for k, v in RunConfig().to_dict().items() if k != "model"}, **ModelSpec().to_dict()}
    generated = field_options(RunConfig, overrides=True)
    assert sorted(o.name for o in generated) == sorted(RunConfig.keys())
    for o in generated:
        p = params[o.name]
        assert p.opts[0] == "--" + o.name.replace("_", "-") and p.default is None, o.name
        assert o.default == defaults[o.name] and p.help.endswith(")") and "(default: " in p.help, o.name
    assert params["window"].help.endswith("(default: 32)") and params["d_model"].help.endswith("(default: 128)")
    assert params["head_hidden"].help.endswith("(default: 256)") and params["amp"].help.endswith("(default: true)")
    assert params["causal"].secondary_opts == ["--no-causal"] and params["features"].opts == ["--features", "-f"]
    assert params["temporal_options"].multiple and params["head_hidden"].multiple
    r = CliRunner().invoke(app, ["train-head", "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "--temporal-options" in r.output and "--frame-mask-mode" in r.output
    assert "(default: 0.001)" in r.output and "xattn-gated" in r.output


def test_pc_train_options_are_the_train_config_fields():
    params = {p.name: p for p in _command("pc", "train").params}
    assert set(params) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert params["data"].required and params["out"].required and not params["ratio"].required
    assert params["ratio"].default == 4 and params["lr"].default == 1e-4 and params["max_patches"].default is None
    assert params["augment"].default is True and params["augment"].secondary_opts == ["--no-augment"]
    assert params["model_options"].opts == ["--opt"] and params["model_options"].multiple
    assert all(p.help for p in params.values())
    r = CliRunner().invoke(app, ["pc", "train", "--data", "x.h5", "--out", "o", "--opt", "novalue"])
    assert r.exit_code == 2 and "key=value" in r.output


def test_cli_flags_land_in_config_json(tmp_path, synth):
    cache, labels = synth
    cfg = tmp_path / "run.toml"
    cfg.write_text('epochs = 1\n[model]\nd_model = 12\n[model.temporal_options]\nlevels = 1\n')
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-head", "--config", str(cfg), "--cache", str(cache), "--labels", str(labels),
                                 "-f", VISUAL, "--temporal", "tcn", "--temporal-options", "channels=8",
                                 "--head-hidden", "6", "--head-hidden", "4", "--dropout", "0.25", "--no-amp",
                                 "--label-position", "last", "--pool", "mean", "--window", "8", "--stride", "4",
                                 "--eval-stride", "2", "--device", "cpu", "--no-plots", "--out", str(run)])
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "config.json").read_text())
    m = saved["model"]
    assert m["d_model"] == 12 and m["temporal_options"] == {"channels": 8} and m["head_hidden"] == [6, 4]
    assert m["dropout"] == 0.25 and m["label_position"] == "last" and m["pool"] == "mean" and m["fusion"] == "auto"
    assert saved["amp"] is False and saved["eval_stride"] == 2 and saved["epochs"] == 1 and saved["plots"] is False
    assert saved["features"] == [VISUAL] and saved["name"] == "run"
    assert saved["cache"] == str(cache.resolve()) and saved["labels"] == str(labels.resolve())
    assert RunConfig.from_dict(saved).model.head_hidden == [6, 4]
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--temporal-options", "levels"])
    assert r.exit_code == 2 and "key=value" in r.output


def test_run_folder_works_from_another_directory(tmp_path, synth, monkeypatch):
    cache, labels = synth
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    shutil.copytree(cache, work / "cache")
    shutil.copytree(labels, work / "labels")
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    r = CliRunner().invoke(app, ["train-head", "--cache", "cache", "--labels", "labels", "-f", VISUAL, "--temporal", "mlp",
                                 "--epochs", "1", "--d-model", "8", "--window", "8", "--stride", "4", "--device", "cpu",
                                 "--no-plots", "--out", "runs/r"])
    assert r.exit_code == 0, r.output
    saved = json.loads((work / "runs" / "r" / "config.json").read_text())
    assert saved["cache"] == str((work / "cache").resolve()) and saved["labels"] == str((work / "labels").resolve())
    main = json.loads((work / "runs" / "r" / "metrics.json").read_text())["main"]

    monkeypatch.chdir(elsewhere)
    run = os.path.relpath(work / "runs" / "r")
    r = CliRunner().invoke(app, ["predict", "--run", run, "--out", "all"])
    assert r.exit_code == 0, r.output
    assert len((elsewhere / "all" / "predictions_expr.txt").read_text().splitlines()) == 1 + 6 * 60
    r = CliRunner().invoke(app, ["predict", "--run", run, "--out", "val", "--split", "val", "--style", "per-video"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (elsewhere / "val").glob("*.txt")) == ["video004.txt", "video005.txt"]
    r = CliRunner().invoke(app, ["evaluate", "--run", run])
    assert r.exit_code == 0, r.output
    assert json.loads((work / "runs" / "r" / "eval_val.json").read_text())["main"] == pytest.approx(main, abs=1e-6)

    shutil.move(work / "cache", tmp_path / "moved_cache")
    shutil.move(work / "labels", tmp_path / "moved_labels")
    for args in (["evaluate", "--run", run], ["predict", "--run", run, "--out", "x"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and f"error: run {run}: cache {work / 'cache'} not found" in r.output, r.output
        assert "--cache" in r.output
    r = CliRunner().invoke(app, ["predict", "--run", run, "--out", "moved", "--split", "val", "--cache", "../moved_cache"])
    assert r.exit_code == 2 and f"error: run {run}: labels {work / 'labels'} not found" in r.output, r.output
    r = CliRunner().invoke(app, ["predict", "--run", run, "--out", "moved", "--split", "val", "--cache", "../moved_cache",
                                 "--labels", "../moved_labels"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (elsewhere / "moved").glob("*.txt")) == ["predictions_expr.txt"]

    cfg_path = work / "runs" / "r" / "config.json"
    cfg_path.write_text(json.dumps(RunConfig.flatten(saved)))  # a run folder written before configs were nested
    (work / "runs" / "r" / "checksums.json").unlink()  # ... and before run folders recorded their checksums
    r = CliRunner().invoke(app, ["evaluate", "--run", run, "--cache", "../moved_cache", "--labels", "../moved_labels"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["evaluate", "--run", "nowhere"])
    assert r.exit_code == 2 and "error: run nowhere: no config.json" in r.output
