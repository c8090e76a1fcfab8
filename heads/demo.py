"""Stage-2 half of `affcli demo`: train one EXPR and one VA head on the demo cache in well under a minute each."""
from __future__ import annotations

from pathlib import Path

from affcli.heads.config import RunConfig
from affcli.heads.trainer import train_run

DEMO_FEATURES = ["clip:tiny", "wav2vec2:tiny", "ast:tiny"]
DEMO_RUNS = {
    "expr": {"task": "expr", "temporal": "tcn(levels=2, channels=64)", "fusion": "xattn", "loss": "ce(weights=auto)"},
    "va": {"task": "va", "temporal": "tcn(levels=2, channels=64)", "fusion": "xattn-gated", "loss": "ccc"},
}


def demo_train(cache: str | Path, labels_root: str | Path, out_dir: str | Path, device: str = "cpu",
               epochs: int = 8, progress: bool = False, features: list[str] | None = None,
               tasks: tuple[str, ...] = ("expr", "va")) -> dict[str, dict]:
    """Train the demo heads into out_dir/<task>; returns {task: best val metrics (plus main, best_epoch, train_s)}."""
    results = {}
    for task in tasks:
        kw = DEMO_RUNS[task]
        cfg = RunConfig.from_dict(dict(features=list(features or DEMO_FEATURES), cache=str(cache), labels=str(labels_root),
                                       window=32, stride=16, d_model=64, batch_size=32, epochs=epochs, lr=2e-3,
                                       patience=epochs, device=device, out=str(Path(out_dir) / task),
                                       name=f"demo-{task}", **kw))
        m = train_run(cfg, progress=progress)
        results[task] = {**m["val"], "main": m["main"], "best_epoch": m["best_epoch"],
                         "train_s": m["timings"]["train_s"], "run_dir": cfg.out}
    return results
