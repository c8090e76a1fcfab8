"""Acceptance of issue 8: a backbone kind registered inside a test extracts into a cache and a head trains on it,
and heads take each feature set's modality from the store, never from its kind name."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from affcli.cache import FeatureStore
from affcli.cache.h5io import import_h5
from affcli.heads.config import RunConfig
from affcli.heads.data.loading import load_run_data
from affcli.heads.train.trainer import train_run
from affcli.pipeline.backbones import BACKBONES, VisualBackbone, build_backbone
from affcli.synthetic.media import make_demo_dataset
from affcli.pipeline.extract import ExtractConfig, run_extract


class GridColour(VisualBackbone):
    """Mean RGB of a 2x2 grid over the crop, through a fixed linear map: a 12-d deterministic visual embedder."""

    input_size = 32
    dim = 12

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(spec, device, seed)
        self._lin = torch.nn.Linear(12, 12, bias=False)
        with torch.no_grad():
            self._lin.weight.copy_(torch.eye(12) * 2.0 - 0.1)
        self._freeze(self._lin)

    @property
    def module(self) -> torch.nn.Module:
        return self._lin

    def preprocessing(self) -> dict:
        return {"size": self.input_size, "pool": "2x2 mean rgb"}

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        return self._to_float(frames, self.input_size, "bilinear", True)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._lin(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)).float().cpu()


@pytest.fixture()
def gridcolour():
    BACKBONES.register("gridcolour", help="test-only 2x2 mean-colour embedder")(GridColour)
    yield "gridcolour:v1"
    BACKBONES.unregister("gridcolour")


def test_registered_kind_extracts_and_a_head_trains_on_it(gridcolour, tmp_path):
    ds = make_demo_dataset(tmp_path / "data", n_videos=3, seconds=2.0, fps=10.0)
    cache = tmp_path / "c.zarr"
    res = run_extract(ExtractConfig(cache=cache, backbones=[gridcolour], video_dir=ds.video_dir, device="cpu",
                                    face="none", prompt_sets=(), decode_workers=1))
    assert [r.status for r in res] == ["ok"] * 3
    st = FeatureStore(cache, mode="r")
    fp = st.fingerprint(gridcolour)
    assert (fp["modality"], fp["dim"], fp["spec"]) == ("visual", 12, gridcolour)
    rec = st.read_video(gridcolour, ds.video_ids[0])
    frame0 = rec.feats[0].astype(np.float32)
    assert rec.feats.shape == (ds.n_frames[ds.video_ids[0]], 12) and np.abs(frame0).max() > 0.1
    cfg = RunConfig.from_dict({"task": "expr", "features": [gridcolour], "cache": str(cache),
                               "labels": str(ds.label_root), "temporal": "gru", "fusion": "auto",
                               "window": 8, "stride": 4, "d_model": 16, "batch_size": 16, "epochs": 2,
                               "patience": 2, "device": "cpu", "out": str(tmp_path / "run"), "plots": False})
    m = train_run(cfg)
    assert m["best_epoch"] >= 1 and math.isfinite(m["main"])
    assert (tmp_path / "run" / "metrics.json").exists()
    assert gridcolour.split(":")[0] in BACKBONES


def test_kind_is_unregistered_after_the_test():
    assert "gridcolour" not in BACKBONES


@pytest.mark.parametrize("modality", ["visual", "audio"])
def test_heads_take_modality_of_imported_set_from_the_store(tmp_path, modality):
    ds = make_demo_dataset(tmp_path / "data", n_videos=3, seconds=1.0, fps=10.0)
    src = tmp_path / "other_tool.h5"
    rng = np.random.default_rng(0)
    with h5py.File(src, "w") as f:
        for v in ds.video_ids:
            f[v] = rng.normal(size=(ds.n_frames[v], 5)).astype(np.float32)
    cache = tmp_path / "c.zarr"
    import_h5(src, cache, spec="someothertool:layer7", fps=ds.fps, modality=modality)
    cfg = RunConfig.from_dict({"task": "expr", "features": ["someothertool:layer7"], "cache": str(cache),
                               "labels": str(ds.label_root), "device": "cpu"})
    data = load_run_data(cfg, torch.device("cpu"))
    assert data.in_dims == {modality: 5}


def test_tiny_backbones_write_their_modality(tmp_path):
    assert build_backbone("clip:tiny").fingerprint()["modality"] == "visual"
    assert build_backbone("wav2vec2:tiny").fingerprint()["modality"] == "audio"
