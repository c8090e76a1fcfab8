"""train-head --task lsd on a cache extracted with `extract --images-dir`: LSD class-folder labels land on the cached
(folder video, row) of each image, by resolved path or, for a cache extracted from a copy of the tree, by the path
below the label root; windows longer than one image (or strides that skip images) are refused in one line."""
from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from affcli.synthetic.images import write_image_tree

TRAIN, VAL = "training_set_synthetic_images", "validation_set_real_images"


@pytest.fixture(scope="module")
def lsd(tmp_path_factory):
    """An LSD-style tree (3 classes, 6 train / 3 val PNGs each) and its clip:tiny image cache."""
    from affcli.cli import app

    root = tmp_path_factory.mktemp("lsd_train")
    tree = root / "lsd"
    write_image_tree(tree, per_class=6, size=24, seed=0, split=TRAIN)
    write_image_tree(tree, per_class=3, size=24, seed=1, split=VAL)
    cache = root / "c.zarr"
    r = CliRunner().invoke(app, ["extract", "--cache", str(cache), "--images-dir", str(tree), "-b", "clip:tiny",
                                 "--face", "none", "--device", "cpu", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    return tree, cache


def _train(cache, labels, out, *extra):
    from affcli.cli import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(app, ["train-head", "--task", "lsd", "--cache", str(cache), "--labels", str(labels),
                                        "--temporal", "mlp", "--d-model", "32", "--epochs", "12", "--lr", "3e-3",
                                        "--device", "cpu", "--no-plots", "--out", str(out), *extra])
    finally:
        torch.set_num_threads(threads)


def test_lsd_labels_map_to_image_rows_and_train(tmp_path, lsd):
    tree, cache = lsd
    run = tmp_path / "run"
    r = _train(cache, tree, run, "--window", "1", "--stride", "1")
    assert r.exit_code == 0, r.output
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_train_windows"] == 3 * 6 and m["val"]["n_lsd"] == 3 * 3
    assert m["val"]["acc"] >= 0.75, m["val"]
    pred = pl.read_parquet(run / "predictions_val.parquet")
    assert sorted(pred["video"].unique().to_list()) == [f"{VAL}__{c}" for c in ("ANGRER", "DISGUST", "FEAR")]
    assert pred.height == 3 * 3


def test_lsd_labels_from_a_copy_of_the_tree(tmp_path, lsd, capsys):
    """Labels read from another copy of the tree (cache extracted elsewhere) match by the path below the label root;
    an image the cache does not hold is left out with a warning line."""
    from affcli.heads.config import RunConfig
    from affcli.heads.data.loading import load_run_data

    tree, cache = lsd
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)
    extra = copy / TRAIN / "FEAR" / "zz_new.png"
    shutil.copy(copy / TRAIN / "FEAR" / "img_000.png", extra)
    cfg = RunConfig.from_dict(dict(task="lsd", cache=str(cache), labels=str(copy), window=1, stride=1, device="cpu"))
    data = load_run_data(cfg, torch.device("cpu"))
    err = capsys.readouterr().err
    assert "1 of 19 labelled train images have no complete cached row" in err and "zz_new.png" in err, err
    y, mask = data.labels["lsd"].cpu().numpy(), data.labels["mask_lsd"].cpu().numpy()
    assert int(mask.sum()) == 3 * 6 + 3 * 3
    for i, v in enumerate(data.videos):
        rows = slice(int(data.starts[i]), int(data.starts[i] + data.lengths[i]))
        want = ("ANGRER", "DISGUST", "FEAR").index(v.split("__")[1])
        assert mask[rows].all() and np.all(y[rows] == want), v


@pytest.mark.parametrize("flags, needle", [(["--window", "4", "--stride", "1"], "window 4"),
                                           (["--window", "1"], "stride 16")])
def test_image_cache_windows_refused_in_one_line(tmp_path, lsd, flags, needle):
    tree, cache = lsd
    r = _train(cache, tree, tmp_path / "run", *flags)
    assert r.exit_code == 2, r.output
    err = r.output.strip()
    assert len(err.splitlines()) == 1 and needle in err and "--window 1 --stride 1" in err, err
    assert not (tmp_path / "run" / "metrics.json").exists()
