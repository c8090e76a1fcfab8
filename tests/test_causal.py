"""Causal forecasting: no output at t depends on frames after t; horizon targets stay inside their video; the regime
learns a forecast only with the right horizon, and runs from the CLI and inside an ablation grid."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache.table import FeatureTable
from affcli.heads.config import RunConfig
from affcli.heads.data.dataset import Data
from affcli.heads.infer.outputs import predict_rows
from affcli.heads.config import ModelSpec
from affcli.heads.model.head import HeadModel
from affcli.heads.train.trainer import train_run
from affcli.heads.data.windows import frame_windows, make_windows
from affcli.synthetic.features import AUDIO, MODALITY, VISUAL, empty_labels, make_synthetic, random_table

TEMPORALS = ["mlp", "tcn(levels=3, channels=16)", "gru(hidden=16)", "transformer(dim=16, layers=2, heads=2, ff=32)"]
FUSIONS = ["none:visual", "concat(dim=16)", "xattn(heads=2)", "xattn-gated(heads=2, hidden=16)"]


def _model(temporal: str, fusion: str, causal: bool, **kw) -> HeadModel:
    torch.manual_seed(0)
    spec = ModelSpec(temporal=temporal, fusion=fusion, causal=causal, d_model=16, head_hidden=[16], **kw)
    return HeadModel(spec, "va", {"visual": 8, "audio": 8}).eval()


def _inputs(b: int = 2, w: int = 12, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    xs = {m: torch.randn(b, w, 8, generator=g) for m in ("visual", "audio")}
    vs = {m: torch.ones(b, w, dtype=torch.bool) for m in xs}
    vs["audio"][:, 3] = False
    return xs, vs


def _after(xs: dict, t: int) -> dict:
    out = {m: x.clone() for m, x in xs.items()}
    for x in out.values():
        x[:, t + 1:] += 5 * torch.randn_like(x[:, t + 1:])
    return out


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("temporal", TEMPORALS)
def test_perturbing_frames_after_t_changes_no_output_up_to_t(temporal, fusion):
    model = _model(temporal, fusion, causal=True)
    assert model.causal
    xs, vs = _inputs()
    with torch.no_grad():
        base = model(xs, vs)["va"]
        for t in (0, 4, 10):
            out = model(_after(xs, t), vs)["va"]
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
            assert (out[:, t + 1:] - base[:, t + 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("temporal, fusion", [("tcn(levels=3, channels=16)", "none:visual"),
                                              ("gru(hidden=16)", "none:visual"),
                                              ("transformer(dim=16, layers=1, heads=2, ff=32)", "none:visual"),
                                              ("mlp", "xattn(heads=2)")])
def test_the_same_check_catches_a_non_causal_head(temporal, fusion):
    model = _model(temporal, fusion, causal=False)
    assert not model.causal
    xs, vs = _inputs()
    with torch.no_grad():
        base, out = model(xs, vs)["va"], model(_after(xs, 4), vs)["va"]
    assert (out[:, :5] - base[:, :5]).abs().max() > 1e-4


def test_horizon_targets_stay_in_their_video_and_inputs_end_horizon_frames_before():
    starts, lengths, H, W = np.array([0, 20, 35]), np.array([20, 15, 10]), 3, 4
    w = frame_windows(starts, lengths, W, horizon=H)
    video_of = np.repeat(np.arange(3), lengths)
    assert sorted(w.target.tolist()) == list(range(45))  # every frame is a target exactly once
    for i in range(len(w)):
        t, v = int(w.target[i]), int(w.video[i])
        assert video_of[t] == v
        e = t - H  # the window's end (the newest frame it may see)
        pos = e - np.arange(W - 1, -1, -1)
        np.testing.assert_array_equal(w.real[i].numpy(), pos >= starts[v])
        real = w.idx[i][w.real[i]].numpy()
        assert (video_of[real] == v).all() and (real <= e).all()
        if t - starts[v] < H:
            assert not w.real[i].any()  # the first H targets of a video see no frame
    ends = {int(w.idx[i][w.real[i]].max()) for i in range(len(w)) if w.real[i].any()}
    for s, n in zip(starts, lengths):  # the last H frames of a video end no window: their targets would lie past it
        assert not ends & set(range(s + n - H, s + n)) and set(range(s, s + n - H)) <= ends
    strided = make_windows(starts, lengths, W, 5, "end", horizon=H)
    assert all(video_of[int(t)] == int(v) for t, v in zip(strided.target, strided.video))


def test_predict_rows_at_t_ignores_rows_after_t_minus_horizon():
    H, W = 4, 6
    table = random_table(2, 30, {VISUAL: 8, AUDIO: 8}, seed=1)
    spec = ModelSpec(temporal="tcn(levels=2, channels=16)", fusion="concat(dim=16)", causal=True, d_model=16,
                     label_position="last", horizon=H)
    torch.manual_seed(0)
    model = HeadModel(spec, "va", {"visual": 8, "audio": 8})
    data = Data.from_table(table, empty_labels(table.n_frames), {"all": table.videos}, "va")
    _, base = predict_rows(model, data, [0, 1], W)
    e = 12  # perturb every row after e of video 0 (rows of video 1 start at 30)
    for m in data.modalities:
        data.modalities[m][e + 1:30] += 5
    _, out = predict_rows(model, data, [0, 1], W)
    torch.testing.assert_close(out["va"][: e + H + 1], base["va"][: e + H + 1], rtol=0, atol=1e-6)
    assert (out["va"][e + H + 1:30] - base["va"][e + H + 1:30]).abs().max() > 1e-4
    torch.testing.assert_close(out["va"][30:], base["va"][30:], rtol=0, atol=0)


def _forecast_task(H: int, n_videos: int = 6, n: int = 80, seed: int = 0):
    """Label at t = [feature 0 at t - H > 0]: only a head that forecasts H frames ahead can learn it."""
    rng = np.random.default_rng(seed)
    per, ys, ms = {}, [], []
    for i in range(n_videos):
        x = rng.standard_normal((n, 4)).astype(np.float32)
        y = np.zeros(n, np.int64)
        y[H:] = (x[:-H, 0] > 0).astype(np.int64)
        m = np.arange(n) >= H
        per[f"v{i:03d}"] = {VISUAL: (x, np.ones(n, bool))}
        ys.append(y)
        ms.append(m)
    table = FeatureTable.from_arrays(per, modality={VISUAL: MODALITY[VISUAL]})
    lab = empty_labels(table.n_frames)
    lab["expr"], lab["mask_expr"] = np.concatenate(ys), np.concatenate(ms)
    return table, lab, {"train": table.videos[:4], "val": table.videos[4:]}


def test_training_with_the_right_horizon_learns_the_forecast(tmp_path):
    H = 5
    table, lab, splits = _forecast_task(H)
    acc = {}
    for h in (0, H):
        cfg = RunConfig.from_dict(dict(task="expr", window=4, stride=1, d_model=16, temporal="tcn(levels=1, channels=16)",
                                       causal=True, label_position="last", horizon=h, epochs=8, patience=8, lr=1e-2,
                                       batch_size=64, device="cpu", loss="ce", out=str(tmp_path / f"h{h}"), plots=False,
                                       save_predictions=False, warmup=0))
        acc[h] = train_run(cfg, table, lab, splits=splits)["val"]["acc"]
    assert acc[H] > 0.9 and acc[0] < 0.65, acc


def test_shift_is_a_deprecated_alias_of_horizon(tmp_path):
    with pytest.warns(DeprecationWarning, match="'shift' is deprecated; use 'horizon'"):
        flat = RunConfig.from_dict({"label_position": "last", "shift": 10})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        nested = RunConfig.from_dict({"model": {"label_position": "last", "shift": 10}})
        old = HeadModel.from_record({"task": "va", "in_dims": {"visual": 8}, "label_position": "last", "shift": 10})
    assert flat.model.horizon == nested.model.horizon == old.spec.horizon == 10 and "shift" not in flat.to_dict()["model"]
    with pytest.raises(ValueError, match="'shift' \\(deprecated\\) and 'horizon' disagree"):
        RunConfig.from_dict({"model": {"label_position": "last", "shift": 10, "horizon": 3}})
    assert RunConfig.from_dict({"horizon": 3}).model.label_position == "last", "--horizon H implies last"
    assert RunConfig.from_dict({"dilation": 2}).model.label_position == "last"
    with pytest.raises(ValueError, match="horizon need label_position"):
        RunConfig.from_dict({"horizon": 3, "label_position": "frame"})


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("causal"), n_videos=4, n_frames=64, dims=(8, 6))


def test_causal_horizon_regime_from_the_cli(synth, tmp_path):
    from affcli.cli import app

    cache, labels = synth
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "--task", "expr",
                                 "-f", VISUAL, "--temporal", "gru(hidden=16)", "--causal", "--label-position", "last",
                                 "--horizon", "3", "--window", "8", "--stride", "4", "--d-model", "16", "--epochs", "2",
                                 "--no-plots", "--device", "cpu", "--out", str(run)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["horizon"] == 3 and cfg["model"]["causal"] is True
    assert json.loads((run / "metrics.json").read_text())["causal"] is True
    r = CliRunner().invoke(app, ["predict", "--run", str(run), "--out", str(tmp_path / "pred")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["train-head", "--cache", str(cache), "--labels", str(labels), "-f", VISUAL,
                                 "--horizon", "3", "--label-position", "frame", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "horizon need label_position" in r.output


def test_horizon_is_an_ablation_axis(synth, tmp_path):
    from rich.console import Console

    from affcli.heads.ablate import build_runs, grid_from_dict, grid_meta, run_grid

    grid = grid_from_dict({"base": {"task": "expr", "features": [VISUAL], "epochs": 1, "device": "cpu", "window": 8,
                                    "stride": 4, "batch_size": 32, "d_model": 16, "plots": False, "warmup": 0,
                                    "temporal": "tcn(levels=2, channels=16)", "causal": True, "label_position": "last"},
                           "axes": {"horizon": [0, 5]}})
    runs = build_runs(grid, *synth)
    assert sorted(r.config["model"]["horizon"] if "model" in r.config else r.config["horizon"] for r in runs) == [0, 5]
    status = run_grid(runs, tmp_path / "abl", console=Console(quiet=True), grid_meta=grid_meta(grid), progress=False)
    assert status.count("ok") == 2, status
    got = sorted(json.loads(p.read_text())["model"]["horizon"] for p in (tmp_path / "abl").rglob("config.json"))
    assert got == [0, 5]
