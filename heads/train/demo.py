"""Stage-2 half of `affcli demo`: train one EXPR and one VA head on the demo cache in well under a minute each."""
from __future__ import annotations

from pathlib import Path

from affcli.heads.config import RunConfig
from affcli.heads.train.trainer import train_run

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


def sparse_mtl_labels(labels_root: str | Path, out: str | Path, fraction: float = 0.1, seed: int = 0) -> Path:
    """MTL annotation files built from complete per-video EXPR/VA/AU labels: each train frame keeps each task's label
    with probability `fraction` (the incomplete labels distillation is for); val stays complete. Returns `out`."""
    import numpy as np
    import polars as pl

    from affcli.heads.data.labels import load_labels
    from affcli.heads.tasks import get_task

    rng = np.random.default_rng(seed)
    mtl = get_task("mtl")
    for split in ("train", "val"):
        df = None
        for task in ("va", "expr", "au"):
            o = get_task(task).outputs[0]
            part = load_labels(labels_root, task, split).select("video", "frame", *o.columns, f"mask_{o.key}")
            keep = part[f"mask_{o.key}"].to_numpy() & (rng.random(part.height) < (fraction if split == "train" else 1))
            kind = pl.Float64 if o.kind == "reg" else pl.Int64
            part = part.with_columns([pl.when(pl.Series(keep)).then(pl.col(c)).otherwise(o.invalid).cast(kind).alias(c)
                                      for c in o.columns]).drop(f"mask_{o.key}")
            df = part if df is None else df.join(part, on=["video", "frame"], how="full", coalesce=True)
        image = pl.col("video") + "/" + (pl.col("frame") + 1).cast(pl.String).str.zfill(5) + ".jpg"
        cols = [c for o in mtl.outputs for c in get_task(o.key).outputs[0].columns]
        table = df.sort("video", "frame").select(image.alias("image"), *[pl.col(c).cast(pl.String) for c in cols])
        path = Path(out) / "MTL_Challenge" / mtl.labels.splits[split][0]
        path.parent.mkdir(parents=True, exist_ok=True)
        table.write_csv(path)
    return Path(out)


def demo_distill(workdir: str | Path, cache: str | Path | None = None, labels_root: str | Path | None = None,
                 device: str = "cpu", epochs: int = 6, fraction: float = 0.1) -> dict:
    """The distillation regime once on the demo data (`workdir/cache.zarr`, `workdir/data/labels` by default): one
    teacher per task on the complete labels, then the MTL student on a `fraction` of them, alone and with
    `--distill-from` the teachers (their targets cached in the feature cache); returns the figures."""
    import time

    from affcli.cache.teacher import teachers

    t0 = time.perf_counter()
    workdir = Path(workdir)
    cache = Path(cache or workdir / "cache.zarr")
    labels_root = Path(labels_root or workdir / "data" / "labels")
    out = workdir / "distill"
    mtl_labels = sparse_mtl_labels(labels_root, out / "labels", fraction)
    base = dict(cache=str(cache), temporal="mlp", window=16, stride=8, d_model=32, batch_size=32,
                epochs=epochs, patience=epochs, lr=3e-3, warmup=0, device=device, plots=False, save_predictions=False)
    runs = {t: out / "teachers" / t for t in ("expr", "va", "au")}
    teacher_main = {t: train_run(RunConfig.from_dict({**base, "task": t, "labels": str(labels_root),
                                                      "out": str(r)}))["main"] for t, r in runs.items()}
    student = {**base, "task": "mtl", "labels": str(mtl_labels)}
    alone = train_run(RunConfig.from_dict({**student, "out": str(out / "alone")}))
    t1 = time.perf_counter()
    dist = train_run(RunConfig.from_dict({**student, "out": str(out / "distill"),
                                          "distill_from": [str(r) for r in runs.values()]}))
    first_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    train_run(RunConfig.from_dict({**student, "out": str(out / "distill_again"),
                                   "distill_from": [str(r) for r in runs.values()]}))
    mine = {str(r.resolve()) for r in runs.values()}
    cached = {k: v["videos"] for k, v in teachers(cache).items() if v["run"] in mine}
    pick = ("p_mtl", "p_va", "p_expr", "p_au")
    return {"label_fraction": fraction, "teachers": teacher_main,
            "alone": {k: alone["val"][k] for k in pick}, "distill": {k: dist["val"][k] for k in pick},
            "teacher_cache": cached, "distill_run_s": first_s, "distill_rerun_s": time.perf_counter() - t1,
            "seconds": time.perf_counter() - t0, "run_dir": str(out / "distill")}


def demo_postprocess(workdir: str | Path, cache: str | Path | None = None, labels_root: str | Path | None = None,
                     device: str = "cpu", epochs: int = 6) -> dict:
    """Post-processing once on the demo data: an AU and an EXPR head trained with interpolation over faceless frames
    and tuned per-AU thresholds / per-class biases; returns each task's val score untuned and tuned."""
    import time

    t0 = time.perf_counter()
    workdir = Path(workdir)
    base = dict(cache=str(cache or workdir / "cache.zarr"), labels=str(labels_root or workdir / "data" / "labels"),
                temporal="mlp", window=16, stride=8, d_model=32, batch_size=32, epochs=epochs,
                patience=epochs, lr=3e-3, warmup=0, device=device, plots=False, save_predictions=False,
                interpolate="linear", tune_thresholds=True, tune_bias=True)
    out = {}
    for task in ("au", "expr"):
        m = train_run(RunConfig.from_dict({**base, "task": task, "out": str(Path(workdir) / "postprocess" / task)}))
        out[task] = {"untuned": m["main_untuned"], "tuned": m["main"], "postprocess": m["postprocess"]}
    return {**out, "interpolate": "linear", "seconds": time.perf_counter() - t0}


def _lsd_probe(cache: Path, classes: dict, out: Path, init_from: str | None, n_labels: int = 5) -> float:
    """Linear probe (frozen encoder, linear head) on `n_labels` labels per class of the first half of the folders;
    validation: every image of the other half. Returns the val macro F1 (p_lsd)."""
    import numpy as np

    from affcli.cache import load_table
    from affcli.synthetic.features import empty_labels
    from affcli.synthetic.images import IMAGE_SPEC

    vids = sorted(classes)
    table = load_table(cache, [IMAGE_SPEC], videos=vids)
    y = np.concatenate([classes[v] for v in vids])
    lab = empty_labels(len(y))
    lab["lsd"] = y
    half = int(table.starts[len(vids) // 2])
    rng = np.random.default_rng(0)
    for c in np.unique(y):
        lab["mask_lsd"][rng.choice(np.where(y[:half] == c)[0], n_labels, replace=False)] = True
    lab["mask_lsd"][half:] = True
    cfg = RunConfig.from_dict(dict(task="lsd", window=1, stride=1, batch_size=64, epochs=40, patience=40, lr=1e-2,
                                   device="cpu", out=str(out), plots=False, save_predictions=False, temporal="mlp",
                                   d_model=32, freeze_encoder=True, init_from=init_from))
    return float(train_run(cfg, table, lab, splits={"train": vids[:len(vids) // 2], "val": vids[len(vids) // 2:]})["main"])


def demo_lsd(workdir: str | Path, epochs: int = 8, seed: int = 0) -> dict:
    """The LSD regime on a synthetic image-feature cache with latent classes and 2 stored views per image: SimCLR
    and emotion-aware (k-means positives) pretraining, then the same linear probe on random, SSL and emotion-aware
    encoders (5 labels per class). Returns a summary dict (probe macro F1s, losses, seconds)."""
    import time

    from affcli.heads.config import ModelSpec
    from affcli.heads.train.pretrain_run import PretrainConfig, run_pretrain
    from affcli.synthetic.images import latent_class_cache

    t0 = time.perf_counter()
    work = Path(workdir)
    cache, classes = latent_class_cache(work / "lsd", seed=seed)
    probe, losses = {"random": _lsd_probe(cache, classes, work / "probe-random", None)}, {}
    for name, positives in (("ssl", "none"), ("aware", "kmeans")):
        cfg = PretrainConfig(cache=str(cache), out=str(work / f"pretrain-{name}"), method="simclr", positives=positives,
                             clusters=4, epochs=epochs, batch_size=128, device="cpu", seed=seed,
                             model=ModelSpec(temporal="mlp", d_model=32))
        losses[name] = run_pretrain(cfg)["loss"]
        probe[name] = _lsd_probe(cache, classes, work / f"probe-{name}", cfg.out)
    return {"images": int(sum(len(v) for v in classes.values())), "views": 2, "probe": probe, "pretrain_loss": losses,
            "seconds": time.perf_counter() - t0, "cache": str(cache)}


def demo_lsd_train(cache: str | Path, labels_root: str | Path, out: str | Path, device: str = "cpu",
                   epochs: int = 12) -> dict:
    """`train-head --task lsd --window 1 --stride 1` on an `extract --images-dir` cache of an LSD-style tree (labels
    mapped onto the cached image rows); returns the val metrics with `main` and `run_dir`."""
    cfg = RunConfig.from_dict(dict(task="lsd", cache=str(cache), labels=str(labels_root), window=1, stride=1,
                                   temporal="mlp", d_model=32, batch_size=32, epochs=epochs, patience=epochs, lr=3e-3,
                                   warmup=0, device=device, out=str(out), name="demo-lsd", plots=False))
    m = train_run(cfg)
    return {**m["val"], "main": m["main"], "n_train": m["n_train_windows"], "run_dir": cfg.out}
