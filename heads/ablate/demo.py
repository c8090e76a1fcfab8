"""The ablation step of `affcli demo`: fusion none:visual / none:audio / xattn x two seeds on EXPR, tiny epochs."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from affcli.heads.ablate.execute import run_grid
from affcli.heads.ablate.grid import grid_from_dict
from affcli.heads.ablate.report import STD_NOTE, build_report
from affcli.heads.ablate.validate import build_runs, cached_feature_sets, grid_meta
from affcli.heads.fusion import group_features

DEMO_BASE = {"task": "expr", "temporal": "tcn(channels=32, levels=2)", "loss": "ce(weights=auto)", "d_model": 32,
             "window": 32, "stride": 16, "batch_size": 32, "lr": 2e-3, "plots": False}


def pick_features(cache: str | Path) -> list[str]:
    """The first visual and the first audio feature set of the cache (by the modality in their fingerprints)."""
    from affcli.cache.store import FeatureStore

    present = cached_feature_sets(cache)
    by_modality = group_features(present, FeatureStore(cache, mode="r").modalities(present))
    if "visual" not in by_modality or "audio" not in by_modality:
        raise ValueError(f"{cache}: the demo ablation needs a visual and an audio feature set; present: {present}")
    return [by_modality["visual"][0], by_modality["audio"][0]]


def demo_grid(cache: str | Path, epochs: int = 6, device: str = "cpu", features: list[str] | None = None) -> dict:
    """The demo grid as a dict (same shape as a grid file); `features` default to the cache's first visual and
    first audio set."""
    return {"base": {**DEMO_BASE, "epochs": epochs, "patience": epochs, "device": device,
                     "features": list(features or pick_features(cache))},
            "axes": {"fusion": ["none:visual", "none:audio", "xattn"], "seeds": [0, 1]}}


def demo_ablation(cache: str | Path, labels_root: str | Path, out_dir: str | Path, device: str = "cpu",
                  epochs: int = 6, console: Console | None = None, features: list[str] | None = None) -> str:
    """Run the demo grid in-process (data loaded once) into out_dir; return the markdown table."""
    grid = grid_from_dict(demo_grid(cache, epochs, device, features), source="demo")
    runs = build_runs(grid, cache, labels_root)
    run_grid(runs, out_dir, jobs=1, console=console or Console(), grid_meta=grid_meta(grid))
    tables = build_report(out_dir)
    return "\n\n".join(f"{t.task} ({STD_NOTE}; best in bold)\n\n{t.markdown}" for t in tables)
