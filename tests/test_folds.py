"""`train-head --folds K`: K sub-runs whose out-of-fold predictions cover every labelled frame exactly once, the same
seed gives the same folds and scores, --fold-by groups, the official split reported when it is a fold, a `folds`
grid axis, and hostile fold options refused in one line with nothing written."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from affcli.cli import app
from affcli.common.runs import read_json
from affcli.heads.config import RunConfig
from affcli.heads.data.loading import prepare_data
from affcli.heads.train.folds import OOF_FILE, assign_folds, video_groups
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

FLAGS = ["--task", "expr", "-f", VISUAL, "-f", AUDIO, "--epochs", "2", "--warmup", "0", "--window", "16",
         "--stride", "16", "--batch-size", "32", "--d-model", "16", "--device", "cpu", "--no-plots", "--no-tensorboard"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    """Six synthetic videos (4 train, 2 val) with EXPR labels."""
    return make_synthetic(tmp_path_factory.mktemp("folds"), n_videos=6, n_frames=64, dims=(8, 6))


def _train(synth, out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]),
                                    "--out", str(out), *FLAGS, *extra])


def _labelled(synth) -> set[tuple[str, int]]:
    """(video, 1-based frame) of every labelled frame of both splits, as training sees them."""
    cfg = RunConfig.from_dict({"task": "expr", "features": [VISUAL, AUDIO], "cache": str(synth[0]),
                               "labels": str(synth[1]), "device": "cpu"})
    data = prepare_data(cfg)
    mask = data.labels["mask_expr"].numpy()
    return {(v, f + 1) for v, s, n in zip(data.videos, data.starts, data.lengths) for f in range(int(n))
            if mask[int(s) + f]}


def test_three_folds_cover_every_labelled_frame_once_and_repeat(synth, tmp_path):
    res = _train(synth, tmp_path / "cv", "--folds", "3", "--seed", "3")
    assert res.exit_code == 0, res.output
    assert "3-fold main" in res.output and "out-of-fold" in res.output
    out = tmp_path / "cv"
    assert sorted(p.name for p in out.glob("fold*") if p.is_dir()) == ["fold0", "fold1", "fold2"]
    for k in range(3):
        assert (out / f"fold{k}" / "model.safetensors").is_file()
    oof = pl.read_parquet(out / OOF_FILE)
    lab = oof.filter(pl.col("mask_expr"))
    counts = lab.group_by("video", "frame").len()
    assert counts["len"].max() == 1, "a labelled frame is predicted by two folds"
    assert set(zip(lab["video"].to_list(), lab["frame"].to_list())) == _labelled(synth)
    folds = read_json(out / "folds.json")
    assert sorted(v for f in folds["folds"] for v in f) == sorted(f"video{i:03d}" for i in range(6))
    m = read_json(out / "metrics.json")
    mains = [f["main"] for f in m["folds"]]
    assert m["kind"] == "folds" and m["k"] == 3 and m["main"] == pytest.approx(sum(mains) / 3)
    assert m["main_std"] > 0 and 0 <= m["oof"]["main"] <= 1
    assert read_json(out / "config.json")["kind"] == "folds"

    again = _train(synth, tmp_path / "cv2", "--folds", "3", "--seed", "3")
    assert again.exit_code == 0, again.output
    assert read_json(tmp_path / "cv2" / "folds.json")["folds"] == folds["folds"]
    assert [f["main"] for f in read_json(tmp_path / "cv2" / "metrics.json")["folds"]] == mains

    # a fold run is a run: predict reads it as the mean of its fold models
    pred = CliRunner().invoke(app, ["predict", "--run", str(out), "--out", str(tmp_path / "p"), "--split", "val"])
    assert pred.exit_code == 0, pred.output
    assert (tmp_path / "p" / "predictions_expr.txt").is_file()


def test_fold_by_groups_and_official_split_as_a_fold(synth, tmp_path):
    fb = tmp_path / "groups.csv"
    fb.write_text("video,group\n# subjects\nvideo000,s1\nvideo001,s1\nvideo002,s2\nvideo003,s2\n"
                  "video004,official\nvideo005,official\n")
    res = _train(synth, tmp_path / "cv", "--folds", "3", "--fold-by", str(fb), "--epochs", "1")
    assert res.exit_code == 0, res.output
    folds = read_json(tmp_path / "cv" / "folds.json")["folds"]
    assert sorted(map(tuple, folds)) == [("video000", "video001"), ("video002", "video003"), ("video004", "video005")]
    m = read_json(tmp_path / "cv" / "metrics.json")
    k = folds.index(["video004", "video005"])
    assert m["official_val"]["fold"] == k and m["official_val"]["main"] == m["folds"][k]["main"]
    assert "official val" in res.output


def test_sides_of_a_video_stay_in_one_fold():
    pool = ["a_left", "a_right", "b", "c_left", "c", "d"]
    groups = video_groups(pool)
    assert groups["a_left"] == groups["a_right"] == "a" and groups["c"] == groups["c_left"]
    for seed in range(5):
        folds = assign_folds(groups, 3, seed)
        where = {v: i for i, f in enumerate(folds) for v in f}
        assert where["a_left"] == where["a_right"] and where["c"] == where["c_left"]
        assert sorted(v for f in folds for v in f) == sorted(pool)
    assert assign_folds(groups, 3, 7) == assign_folds(groups, 3, 7)
    with pytest.raises(ValueError, match="different groups"):
        video_groups(pool, {"a_left": "x", "a_right": "y", "b": "x", "c": "x", "d": "y"})


@pytest.mark.parametrize("extra,text,needle", [
    (["--folds", "7"], None, "only 6 group(s)"),
    (["--folds", "1"], None, "folds must be 0 (off) or >= 2"),
    (["--folds", "2", "--fold-by", "FB"], "video000,a\nvideo999,b\n", "not labelled videos"),
    (["--folds", "2", "--fold-by", "FB"], "video000,a\n", "have no group"),
    (["--folds", "2", "--fold-by", "FB"], b"\x00\xff\xfe junk", "not a text file"),
    (["--folds", "2", "--fold-by", "FB"], "video000 a b\n", "expected `video,group`"),
    (["--fold-by", "FB"], "video000,a\n", "fold_by needs folds"),
])
def test_hostile_fold_options_refused_in_one_line(synth, tmp_path, extra, text, needle):
    fb = tmp_path / "fb.txt"
    if isinstance(text, bytes):
        fb.write_bytes(text)
    elif text is not None:
        fb.write_text(text)
    res = _train(synth, tmp_path / "out", *[str(fb) if x == "FB" else x for x in extra])
    assert res.exit_code == 2, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not any((tmp_path / "out").glob("fold*")) and not (tmp_path / "out" / "metrics.json").exists()


def test_folds_axis_in_ablate_and_unchanged_hashes(synth, tmp_path):
    from rich.console import Console

    from affcli.common.runs import config_hash
    from affcli.heads.ablate import build_report, build_runs, grid_from_dict, grid_meta, run_grid
    from affcli.heads.ablate.grid import NOT_HASHED, hashed_config

    base = {"task": "expr", "features": [VISUAL, AUDIO], "epochs": 1, "device": "cpu", "window": 16, "stride": 16,
            "batch_size": 32, "d_model": 16, "plots": False, "warmup": 0, "tensorboard": False}
    grid = grid_from_dict({"base": base, "axes": {"folds": [0, 2]}})
    runs = build_runs(grid, *synth)
    plain = next(r for r in runs if r.config["folds"] == 0)
    old = {k: v for k, v in plain.config.items() if k not in (*NOT_HASHED, "folds", "fold_by", "tensorboard", "mlflow")}
    assert plain.hash == hashed_config(plain.config) == config_hash(old), "a grid without folds keeps its old hashes"
    res = run_grid(runs, tmp_path / "abl", console=Console(quiet=True), grid_meta=grid_meta(grid), progress=False)
    assert res.count("ok") == 2, [o.error for o in res.outcomes]
    cv = next(r for r in runs if r.config["folds"] == 2)
    assert (tmp_path / "abl" / "runs" / cv.name / "fold1" / "model.safetensors").is_file()
    assert {"0", "2"} == set(build_report(tmp_path / "abl")[0].summary["folds"].to_list())
