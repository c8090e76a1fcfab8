"""Learning is real: context beats frame-wise heads when labels need several frames; fusion beats one modality."""
from __future__ import annotations

import polars as pl
import torch

from affcli.synthetic import features as synth
from affcli.heads.train.trainer import RunConfig, train_run

torch.set_num_threads(1)


def _accuracy(run_dir) -> float:
    df = pl.read_parquet(run_dir / "predictions_val.parquet").filter(pl.col("mask_expr"))
    probs = df.select([f"expr_{j}" for j in range(8)]).to_numpy()
    return float((probs.argmax(1) == df["label_expr"].to_numpy()).mean())


def _fit(tmp_path, name, table, lab, **kw):
    kw = {"epochs": 12, **kw}
    cfg = RunConfig.from_dict(dict(task="expr", loss="ce", window=16, stride=8, batch_size=32, d_model=32, lr=3e-3,
                                   patience=30, plots=False, out=str(tmp_path / name), **kw))
    m = train_run(cfg, table, lab, splits=synth.splits_of(table, 2))
    return m["main"], _accuracy(tmp_path / name)


def test_temporal_head_beats_frame_mlp_when_label_needs_several_frames(tmp_path):
    table, lab = synth.sum_sign_task(k=6)
    mlp_main, mlp_acc = _fit(tmp_path, "mlp", table, lab, temporal="mlp")
    tcn_main, tcn_acc = _fit(tmp_path, "tcn", table, lab, temporal="tcn", causal=True)
    gru_main, gru_acc = _fit(tmp_path, "gru", table, lab, temporal="gru", causal=True)
    assert tcn_acc > mlp_acc + 0.12 and tcn_main > mlp_main
    assert gru_acc > mlp_acc + 0.08


def test_fusion_beats_either_modality_when_label_needs_both(tmp_path):
    table, lab = synth.xor_task()
    accs = {f: _fit(tmp_path, f.replace(":", "_"), table, lab, temporal="mlp", fusion=f, epochs=25)
            for f in ("none:visual", "none:audio", "concat", "xattn")}
    single = max(accs["none:visual"][1], accs["none:audio"][1])
    assert single < 0.65
    for f in ("concat", "xattn"):
        assert accs[f][1] > single + 0.25 and accs[f][0] > max(accs["none:visual"][0], accs["none:audio"][0])
