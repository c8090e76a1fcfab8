"""Self-supervised pretraining (heads/pretrain.py): SSL beats a random encoder under the same linear probe, the
emotion-aware (k-means positives) variant beats plain SimCLR, weights transfer through --init-from, and the
regime runs from the CLI and inside an ablation grid."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache import load_table
from affcli.heads.config import RunConfig
from affcli.heads.config import ModelSpec
from affcli.heads.train.pretrain import check_method, kmeans
from affcli.heads.train.pretrain_run import PretrainConfig, run_pretrain
from affcli.heads.train.trainer import train_run
from affcli.synthetic.features import empty_labels, make_synthetic
from affcli.synthetic.images import IMAGE_SPEC, latent_class_cache

ENC = dict(temporal="mlp", d_model=32)


@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a shared machine
    root = tmp_path_factory.mktemp("latent")
    cache, classes = latent_class_cache(root, seed=0)
    yield root, cache, classes
    torch.set_num_threads(threads)


def _probe(cache, classes, out, init_from=None, n_labels: int = 5) -> float:
    """Linear probe (frozen encoder, linear head) on 5 labels per class of two folders; val = the other two."""
    vids = sorted(classes)
    table = load_table(cache, [IMAGE_SPEC], videos=vids)
    y = np.concatenate([classes[v] for v in vids])
    lab = empty_labels(len(y))
    lab["lsd"] = y
    rng = np.random.default_rng(0)
    half = int(table.starts[2])
    for c in np.unique(y):
        lab["mask_lsd"][rng.choice(np.where(y[:half] == c)[0], n_labels, replace=False)] = True
    lab["mask_lsd"][half:] = True
    cfg = RunConfig.from_dict(dict(task="lsd", window=1, stride=1, batch_size=64, epochs=40, patience=40, lr=1e-2,
                                   device="cpu", out=str(out), plots=False, save_predictions=False,
                                   freeze_encoder=True, init_from=init_from, **ENC))
    assert cfg.model.head_hidden == []
    m = train_run(cfg, table, lab, splits={"train": vids[:2], "val": vids[2:]})
    return float(m["main"])


def test_ssl_probe_beats_random_and_emotion_aware_beats_simclr(latent):
    root, cache, classes = latent
    runs = {}
    for name, pos in (("simclr", "none"), ("aware", "kmeans")):
        cfg = PretrainConfig(cache=str(cache), out=str(root / name), method="simclr", positives=pos, clusters=4,
                             epochs=8, batch_size=128, device="cpu", model=ModelSpec(**ENC))
        m = run_pretrain(cfg)
        assert m["stored_views"] == {"visual": 2} and m["window"] == 1 and np.isfinite(m["loss"]).all()
        runs[name] = _probe(cache, classes, root / f"probe-{name}", cfg.out)
    random = _probe(cache, classes, root / "probe-random")
    assert runs["simclr"] > random + 0.1, (runs, random)
    assert runs["aware"] > runs["simclr"] + 0.03, (runs, random)


def test_methods_registry_and_refusals(latent):
    root, cache, _ = latent
    with pytest.raises(ValueError, match="masked"):
        check_method("masked", "kmeans")
    with pytest.raises(ValueError, match="temperatur"):
        check_method("simclr(temperatur=0.2)")
    m = run_pretrain(PretrainConfig(cache=str(cache), out=str(root / "byol"), method="byol", positives="both",
                                    clusters=4, epochs=2, batch_size=128, device="cpu", model=ModelSpec(**ENC)))
    assert len(m["loss"]) == 2 and np.isfinite(m["loss"]).all()
    from affcli.heads.model.head import HeadModel
    from affcli.heads.train.pretrain import init_encoder

    same = HeadModel(ModelSpec(**ENC), "lsd", {"visual": 32})
    init_encoder(same, str(root / "byol"))
    from safetensors.torch import load_file

    stored = load_file(str(root / "byol" / "encoder.safetensors"))
    assert stored and all(torch.equal(same.state_dict()[k], v) for k, v in stored.items())
    with pytest.raises(ValueError, match="d_model"):
        init_encoder(HeadModel(ModelSpec(temporal="mlp", d_model=16), "lsd", {"visual": 32}), str(root / "byol"))


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 8) * 5
    y = torch.arange(90) % 3
    x = centres[y] + 0.3 * torch.randn(90, 8, generator=g)
    ids = kmeans(x, 3, seed=0)
    assert all(len(set(ids[y == c].tolist())) == 1 for c in range(3))
    assert len(set(ids.tolist())) == 3


def test_pretrain_cli_then_init_from_and_ablate_grid(tmp_path):
    from affcli.cli import app
    from affcli.heads.ablate.command import ablate_command

    cache, labels = make_synthetic(tmp_path / "syn", n_videos=3, n_frames=60)
    runner = CliRunner()
    out = tmp_path / "pre"
    res = runner.invoke(app, ["pretrain", "--cache", str(cache), "--out", str(out), "--method", "simclr",
                              "--positives", "kmeans", "--clusters", "3", "--epochs", "1", "--window", "16",
                              "--temporal", "tcn(levels=1, channels=16)", "--d-model", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "simclr (positives kmeans)" in res.output and (out / "encoder.safetensors").exists()
    args = ["train-head", "--cache", str(cache), "--labels", str(labels), "--out", str(tmp_path / "ft"),
            "--window", "16", "--stride", "8", "--temporal", "tcn(levels=1, channels=16)", "--d-model", "16",
            "--epochs", "1", "--device", "cpu", "--init-from", str(out), "--freeze-encoder", "--no-plots"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert saved["init_from"] == str(out.resolve()) and saved["freeze_encoder"] and saved["model"]["head_hidden"] == []
    res = runner.invoke(app, [*args[:-6], "--d-model", "32", "--epochs", "1", "--device", "cpu", "--init-from", str(out),
                              "--overwrite"])
    assert res.exit_code == 2 and "d_model" in res.output
    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\nwindow = 16\nstride = 8\nepochs = 1\nssl_epochs = 1\nd_model = 16\n'
                    'temporal = "tcn(levels=1, channels=16)"\ndevice = "cpu"\nplots = false\n'
                    '[axes]\nssl_method = ["masked", "simclr"]\n')
    assert ablate_command(grid, cache, labels, tmp_path / "abl", 1, 0, None, None, False) == 0
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "abl").rglob("metrics.json")]
    assert len(metrics) == 2 and all(len(m["ssl_loss"]) == 1 for m in metrics)
    bad = tmp_path / "bad.toml"
    bad.write_text(grid.read_text().replace('"simclr"]', '"simclr-x"]'))
    assert ablate_command(bad, cache, labels, tmp_path / "abl2", 1, 0, None, None, True) == 2
