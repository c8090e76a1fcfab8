"""Issue 18 acceptance, per new kind: extract the demo videos, `cache ls` shows its modality and dim, `cache verify`
passes, and a head trains on it; `--audio-valid vad:silero` gives the fusion the speech mask."""
from __future__ import annotations

import math
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from affcli.cache import FeatureStore
from affcli.cli import app
from affcli.heads.config import RunConfig
from affcli.heads.data.loading import load_run_data
from affcli.heads.train.trainer import train_run
from affcli.pipeline.extract import ExtractConfig, run_extract
from affcli.synthetic.media import make_demo_dataset

KINDS = {"dinov2:tiny(pool=both)": ("visual", 64), "timm:tiny": ("visual", 256), "wavlm:tiny(layer=1)": ("audio", 32),
         "hubert:tiny": ("audio", 32), "whisper:tiny": ("audio", 32), "opensmile:eGeMAPSv02": ("audio", 50),
         "opensmile:ComParE_2016": ("audio", 130), "vad:silero": ("audio", 1)}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    ds = make_demo_dataset(root / "data", n_videos=3, seconds=2.0, fps=10.0)
    cache = root / "c.zarr"
    res = run_extract(ExtractConfig(cache=cache, backbones=list(KINDS), video_dir=ds.video_dir, device="cpu",
                                    face="none", prompt_sets=(), decode_workers=1, batch_size=32))
    assert [r.status for r in res] == ["ok"] * 3, [r.message for r in res]
    return ds, cache, root


def test_cache_ls_shows_modality_and_dim_and_verify_passes(extracted, monkeypatch):
    ds, cache, _ = extracted
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    ls = runner.invoke(app, ["cache", "ls", str(cache)], terminal_width=250)
    assert ls.exit_code == 0, ls.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:]] for line in ls.output.splitlines()
            if line.count("│") >= 4}
    for spec, (modality, dim) in KINDS.items():
        assert rows[spec][:3] == [modality, str(dim), "3"], (spec, rows.get(spec))
    verify = runner.invoke(app, ["cache", "verify", str(cache), "--weights"], terminal_width=250)
    assert verify.exit_code == 0, verify.output
    st = FeatureStore(cache, mode="r")
    vad = st.read_video("vad:silero", ds.video_ids[0])
    assert vad.feats.shape[1] == 1 and 0 <= vad.feats.min() and vad.feats.max() <= 1


@pytest.mark.parametrize("spec", list(KINDS))
def test_a_head_trains_on_each_kind(extracted, spec):
    ds, cache, root = extracted
    cfg = RunConfig.from_dict({"task": "expr", "features": [spec], "cache": str(cache), "labels": str(ds.label_root),
                               "temporal": "mlp", "window": 8, "stride": 4, "d_model": 16, "batch_size": 16,
                               "epochs": 2, "patience": 2, "device": "cpu", "plots": False,
                               "save_predictions": False, "out": str(root / "runs" / re.sub(r"\W", "_", spec))})
    m = train_run(cfg)
    assert m["best_epoch"] >= 1 and math.isfinite(m["main"])


def test_audio_valid_masks_audio_where_nobody_speaks(extracted):
    ds, cache, root = extracted
    base = {"task": "expr", "features": ["dinov2:tiny(pool=both)", "opensmile:eGeMAPSv02"], "cache": str(cache),
            "labels": str(ds.label_root), "device": "cpu"}
    plain = load_run_data(RunConfig.from_dict(base), torch.device("cpu"))
    gated = load_run_data(RunConfig.from_dict({**base, "audio_valid": "vad:silero", "audio_valid_threshold": 0.2}),
                          torch.device("cpu"))
    assert gated.features == plain.features and gated.in_dims == plain.in_dims, "the gate is read, not added"
    st = FeatureStore(cache, mode="r")
    speech = np.concatenate([st.read_video("vad:silero", v).feats[:, 0] >= 0.2 for v in plain.videos])
    np.testing.assert_array_equal(gated.valid["audio"].numpy(), plain.valid["audio"].numpy() & speech)
    np.testing.assert_array_equal(gated.valid["visual"].numpy(), plain.valid["visual"].numpy())
    assert (gated.modalities["audio"][~gated.valid["audio"]] == 0).all()
    with pytest.raises(ValueError, match="1-d audio feature set"):
        load_run_data(RunConfig.from_dict({**base, "audio_valid": "opensmile:eGeMAPSv02"}), torch.device("cpu"))


def test_the_fusion_sees_the_speech_mask(extracted, monkeypatch):
    """A 1-d audio set that is 1 in the first half of each video and 0 after (what a VAD gives on speech, then
    silence): the fusion gets exactly that mask on the audio keys."""
    import h5py

    from affcli.cache.h5io import import_h5
    from affcli.heads import fusion

    ds, cache, root = extracted
    st = FeatureStore(cache, mode="r")
    with h5py.File(root / "speech.h5", "w") as f:
        for v in ds.video_ids:
            n = len(st.read_video("whisper:tiny", v).valid)
            f[v] = (np.arange(n) < n // 2).astype(np.float32)[:, None]
    import_h5(root / "speech.h5", cache, spec="speech:half", fps=ds.fps, modality="audio")
    seen = []
    forward = fusion.CrossAttention.forward
    monkeypatch.setattr(fusion.CrossAttention, "forward", lambda self, h, valid: (seen.append(valid["audio"]),
                                                                                  forward(self, h, valid))[1])
    cfg = RunConfig.from_dict({"task": "expr", "features": ["dinov2:tiny(pool=both)", "whisper:tiny"],
                               "cache": str(cache), "labels": str(ds.label_root), "audio_valid": "speech:half",
                               "fusion": "xattn", "temporal": "mlp", "window": 8, "stride": 4, "d_model": 16,
                               "epochs": 1, "device": "cpu", "plots": False, "save_predictions": False,
                               "out": str(root / "runs" / "gated")})
    data = load_run_data(cfg, torch.device("cpu"))
    for i, v in enumerate(data.videos):
        ok = data.valid["audio"][int(data.starts[i]):int(data.starts[i] + data.lengths[i])].numpy()
        n = len(ok)
        assert not ok[n // 2:].any() and ok[:n // 2].sum() >= n // 2 - 1
    train_run(cfg, data=data)
    masked = torch.cat([v.flatten() for v in seen])
    assert (~masked).any() and masked.any(), "silent frames reach the fusion as masked keys, speech as keys"
