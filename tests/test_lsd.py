"""LSD-style still images: `extract --images-dir` caches one row per image per folder with its path and K seeded
augmented views; the LSD regime demo runs end to end."""
from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from affcli.cache.rows import read_paths, read_views
from affcli.cache.store import FeatureStore
from affcli.synthetic.images import write_image_tree


def test_extract_images_dir_rows_paths_views(tmp_path):
    from affcli.cli import app

    root = tmp_path / "lsd"
    write_image_tree(root, per_class=3, size=24)
    (root / "train" / "ANGRER" / "broken.jpg").write_bytes(b"not an image")
    cache = tmp_path / "c.zarr"
    args = ["extract", "--cache", str(cache), "--images-dir", str(root), "-b", "clip:tiny", "--device", "cpu",
            "--views", "2", "--augment", "--batch-size", "4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    store = FeatureStore(cache, mode="r")
    assert store.videos("clip:tiny") == ["train__ANGRER", "train__DISGUST", "train__FEAR"]
    rec = store.read_video("clip:tiny", "train__ANGRER")
    paths = read_paths(store, "clip:tiny", "train__ANGRER")
    assert paths == ["train/ANGRER/broken.jpg"] + [f"train/ANGRER/img_{i:03d}.png" for i in range(3)]
    assert rec.feats.shape[0] == 4 and rec.valid.tolist() == [False, True, True, True]
    views = read_views(store, "clip:tiny", "train__ANGRER")
    assert views.shape == (2, 4, rec.feats.shape[1])
    assert not np.allclose(views[0, 1:], rec.feats[1:], atol=1e-3) and not np.allclose(views[0], views[1], atol=1e-3)
    assert (views[:, 0] == 0).all()
    aug = store.fingerprint("clip:tiny")["preprocessing"]["crop"]["augment"]
    assert aug["views"] == 2 and aug["seed"] == 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "skipped" in again.output.lower()
    other = CliRunner().invoke(app, [*args[:-3], "--views", "3", "--augment"])
    assert other.exit_code == 2 and "fingerprint" in other.output
    lonely = CliRunner().invoke(app, [*args[:-3], "--views", "2"])
    assert lonely.exit_code == 2 and "--augment" in lonely.output


def test_augmented_views_are_seeded():
    from affcli.pipeline.images import ViewAugment

    crops = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    a = ViewAugment(32, 2, seed=1)(crops, "v", 0)
    assert a.shape == (2, 3, 32, 32, 3)
    assert np.array_equal(a, ViewAugment(32, 2, seed=1)(crops, "v", 0))
    assert np.array_equal(a[:, 1:], ViewAugment(32, 2, seed=1)(crops[1:], "v", 1))
    assert not np.array_equal(a, ViewAugment(32, 2, seed=2)(crops, "v", 0))


def test_demo_lsd(tmp_path):
    import torch

    from affcli.heads.train.demo import demo_lsd

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a shared machine
    try:
        s = demo_lsd(tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert s["images"] > 0 and s["views"] == 2
    assert s["probe"]["aware"] > s["probe"]["ssl"] > s["probe"]["random"] + 0.1
