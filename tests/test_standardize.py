"""Heads standardise each input dimension with the training split's statistics (valid frames only), stored in the
model: the checkpoint carries them, a reloaded model applies them, old checkpoints (without them) still load, and
`standardize = false` turns them off."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from affcli.common.checkpoint import read_checkpoint, write_checkpoint
from affcli.heads.config import ModelSpec
from affcli.heads.model.checkpoint import CHECKPOINT, load_model
from affcli.heads.model.head import HeadModel
from affcli.heads.train.trainer import RunConfig, prepare_data, train_run
from affcli.synthetic import features as synth

DIMS = {synth.VISUAL: 6, synth.AUDIO: 5}


@pytest.fixture(scope="module")
def scaled():
    """Features on wildly different scales (a column around 50 with spread 8 beside ones near 0.01), some invalid."""
    table = synth.random_table(4, [40, 33, 25, 30], DIMS, seed=3, invalid_p=0.2)
    scale = torch.tensor([50.0, 0.01, 1.0, 3.0, 1e3, 0.5])
    table.feats[synth.VISUAL] = table.feats[synth.VISUAL] * scale * 0.16 + torch.tensor([50.0, 0, 0, 0, 0, 0])
    return table, synth.random_labels(table.n_frames, seed=0), synth.splits_of(table, 1)


def _cfg(tmp_path, name="run", **kw):
    base = dict(task="expr", window=8, stride=4, batch_size=16, d_model=8, head_hidden=[8], epochs=1, plots=False,
                save_predictions=False, temporal="mlp", fusion="concat", out=str(tmp_path / name))
    return RunConfig.from_dict({**base, **kw})


def test_statistics_come_from_valid_training_frames_and_travel_in_the_checkpoint(tmp_path, scaled):
    table, lab, splits = scaled
    cfg = _cfg(tmp_path)
    assert cfg.model.standardize, "on by default (chosen by bench/standardize.py, bench/RESULTS.md)"
    train_run(cfg, table, lab, splits=splits)
    data = prepare_data(cfg, table, lab, splits)
    rows = data.rows_of("train")
    for m in ("visual", "audio"):
        x = data.modalities[m][rows].double()
        ok = data.valid[m][rows]
        want_mean, want_std = x[ok].mean(0), x[ok].std(0, unbiased=False)
        _, state = read_checkpoint(tmp_path / "run" / CHECKPOINT, "model_spec")
        torch.testing.assert_close(state[f"proj.{m}.norm.mean"].double(), want_mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(state[f"proj.{m}.norm.std"].double(), want_std, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(x.mean(0), want_mean, atol=1e-3), "invalid (zeroed) and val frames are left out"
    model = load_model(tmp_path / "run")
    z = model.proj["visual"].norm(data.modalities["visual"][rows], data.valid["visual"][rows])
    ok = data.valid["visual"][rows]
    torch.testing.assert_close(z[ok].mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(z[ok].std(0, unbiased=False), torch.ones(6), atol=1e-4, rtol=0)
    assert (z[~ok] == 0).all(), "an invalid frame is the training mean after standardising"


def test_the_option_turns_it_off(tmp_path, scaled):
    table, lab, splits = scaled
    train_run(_cfg(tmp_path, standardize=False), table, lab, splits=splits)
    _, state = read_checkpoint(tmp_path / "run" / CHECKPOINT, "model_spec")
    assert not any(".norm." in k for k in state)
    assert not load_model(tmp_path / "run").spec.standardize


def test_a_checkpoint_from_before_standardisation_loads_as_it_was_trained(tmp_path):
    dims = {"visual": 6, "audio": 5}
    model = HeadModel(ModelSpec(temporal="mlp", fusion="concat", d_model=8, standardize=False), "expr", dims).eval()
    record = {k: v for k, v in model.record().items() if k != "standardize"}  # what older versions wrote
    write_checkpoint(tmp_path / CHECKPOINT, model.state_dict(), model_spec=record)
    old = load_model(tmp_path)
    assert not old.spec.standardize and "norm" not in old.proj["visual"]._modules
    xs = {m: torch.randn(2, 5, d) for m, d in dims.items()}
    vs = {m: torch.ones(2, 5, dtype=torch.bool) for m in dims}
    torch.testing.assert_close(old(xs, vs)["expr"], model(xs, vs)["expr"])


def test_standardising_helps_a_head_on_mixed_scales(tmp_path):
    """The informative visual column is tiny beside a huge uninformative one: z-scoring lets the head see it."""
    rng = np.random.default_rng(0)
    per_video, labs = {}, []
    for v in range(6):
        y = rng.integers(0, 8, 60)
        info = (y[:, None] == np.arange(8)).astype(np.float32) * 0.002
        noise = rng.normal(0, 1, (60, 2)).astype(np.float32) * 500 + 3000
        per_video[f"v{v}"] = {synth.VISUAL: (np.concatenate([info, noise], 1), np.ones(60, bool))}
        labs.append(y)
    from affcli.cache.table import FeatureTable

    table = FeatureTable.from_arrays(per_video, modality={synth.VISUAL: "visual"})
    y = np.concatenate(labs)
    lab = {"expr": y.astype(np.int64), "mask_expr": np.ones(len(y), bool)}
    splits = {"train": [f"v{i}" for i in range(4)], "val": ["v4", "v5"]}
    got = {}
    for on in (True, False):
        m = train_run(_cfg(tmp_path, f"s{on}", standardize=on, fusion="none", epochs=4, lr=3e-3), table, lab,
                      splits=splits)
        got[on] = m["main"]
    assert got[True] > 0.6 and got[True] > got[False] + 0.3, got
