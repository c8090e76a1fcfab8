"""train_run end to end on tiny tables: every head x fusion x task trains, artifacts, determinism, NaN, reuse of Data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affcli.synthetic import features as synth
from affcli.heads.model.checkpoint import load_model
from affcli.heads.fusion import FUSION
from affcli.heads.tasks import TASKS
from affcli.heads.temporal import TEMPORAL
from affcli.heads.train.trainer import NaNLossError, RunConfig, data_key, prepare_data, train_run

torch.set_num_threads(1)
DIMS = {synth.VISUAL: 6, synth.AUDIO: 5}
TEXT = {"expr8": np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32),
        "va9": np.random.default_rng(1).normal(size=(27, 10)).astype(np.float32)}


@pytest.fixture(scope="module")
def tiny():
    table = synth.random_table(3, [30, 17, 25], DIMS, seed=0, invalid_p=0.1)
    return table, synth.random_labels(table.n_frames, seed=0), synth.splits_of(table, 1)


def _cfg(tmp_path, name="run", **kw):
    base = dict(window=8, stride=4, batch_size=16, d_model=8, head_hidden=[8], epochs=1, plots=False,
                save_predictions=False, out=str(tmp_path / name))
    base.update(kw)
    return RunConfig.from_dict(base)


@pytest.mark.parametrize("task", TASKS.names())
@pytest.mark.parametrize("fusion", FUSION.names())
@pytest.mark.parametrize("temporal", TEMPORAL.names())
def test_every_head_fusion_task_trains_one_epoch(tmp_path, tiny, temporal, fusion, task):
    table, lab, splits = tiny
    cfg = _cfg(tmp_path, task=task, temporal=temporal, fusion="none:visual" if fusion == "none" else fusion)
    m = train_run(cfg, table, lab, splits=splits)
    assert np.isfinite(m["main"]) and m["epochs"] == 1 and np.isfinite(m["history"][0]["train_loss"])


def test_run_folder_artifacts_and_reload(tmp_path, tiny):
    table, lab, splits = tiny
    cfg = _cfg(tmp_path, task="mtl", temporal="tcn(levels=2)", fusion="xattn", epochs=2, plots=True, save_predictions=True)
    m = train_run(cfg, table, lab, splits=splits)
    run = tmp_path / "run"
    for f in ("config.json", "metrics.json", "model.safetensors", "predictions_val.parquet", "curves.png",
              "confusion.png", "va_density.png"):
        assert (run / f).exists(), f
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["main"] == m["main"] and len(saved["history"]) == 2 and "epoch_s" in saved["timings"]
    assert json.loads((run / "config.json").read_text())["model"]["fusion"] == "xattn"
    model = load_model(run)
    assert model.spec.temporal == "tcn(levels=2)" and model.in_dims == {"visual": 6, "audio": 5}


def test_same_seed_same_result_and_data_reuse(tmp_path, tiny):
    table, lab, splits = tiny
    cfg = _cfg(tmp_path, "a", task="expr", temporal="gru", fusion="concat", epochs=2)
    data = prepare_data(cfg, table, lab, splits)
    a = train_run(cfg, data=data)
    b = train_run(_cfg(tmp_path, "b", task="expr", temporal="gru", fusion="concat", epochs=2), data=data)
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"] and a["main"] == b["main"]
    assert data_key(cfg) == data_key(_cfg(tmp_path, "c", temporal="tcn")) != data_key(_cfg(tmp_path, task="va"))


def test_nan_loss_raises_a_clear_error(tmp_path, tiny):
    table, lab, splits = tiny
    bad = {k: v.copy() for k, v in lab.items()}
    bad["va"][:, 0], bad["mask_va"][:] = np.nan, True
    with pytest.raises(NaNLossError, match="training loss is nan at epoch 1"):
        train_run(_cfg(tmp_path, task="va"), table, bad, splits=splits)


@pytest.mark.parametrize("extra", [
    {"label_position": "last", "pool": "mean", "causal": True, "temporal": "tcn"},
    {"frame_mask_p": 0.3, "frame_mask_mode": "token", "temporal": "transformer"},
    {"ssl_epochs": 1, "temporal": "tcn"},
    {"loss": "ce(weights=auto)+0.1*text-contrastive", "temporal": "mlp"},
])
def test_options_train(tmp_path, tiny, extra):
    table, lab, splits = tiny
    cfg = _cfg(tmp_path, task="expr", fusion="concat", **extra)
    m = train_run(cfg, prepare_data(cfg, table, lab, splits, text=TEXT))
    assert np.isfinite(m["main"])
    if extra.get("ssl_epochs"):
        assert len(m["ssl_loss"]) == 1 and np.isfinite(m["ssl_loss"][0])


def test_soft_prompt_va_run(tmp_path, tiny):
    table, lab, splits = tiny
    cfg = _cfg(tmp_path, task="va", temporal="gru", fusion="xattn-gated", loss="ccc+0.2*soft-prompt(sigma=0.45)", causal=True)
    m = train_run(cfg, data=prepare_data(cfg, table, lab, splits, text=TEXT))
    assert np.isfinite(m["main"]) and "soft-prompt" in m["history"][0]["terms"]


def test_distill_from_a_teacher_run(tmp_path, tiny):
    table, lab, splits = tiny
    train_run(_cfg(tmp_path, "teacher", task="expr", temporal="mlp", fusion="concat"), table, lab, splits=splits)
    sparse = {k: v.copy() for k, v in lab.items()}
    sparse["mask_expr"][::2] = False
    cfg = _cfg(tmp_path, "student", task="expr", temporal="tcn", fusion="concat",
               loss=f"ce+0.5*distill(teacher='{tmp_path / 'teacher'}', temperature=2.5)")
    m = train_run(cfg, table, sparse, splits=splits)
    assert m["history"][0]["terms"]["distill"] > 0
    with pytest.raises(ValueError, match="features differ"):
        other = synth.random_table(3, [30, 17, 25], {synth.VISUAL: 7, synth.AUDIO: 5}, seed=1)
        train_run(_cfg(tmp_path, "bad", task="expr", temporal="tcn", fusion="concat", loss=cfg.loss), other, sparse, splits=splits)
