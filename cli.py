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


# ===== section: extract, prompts, cache (lead) =====

def _fail(msg: str) -> None:
    """Print a one-line error and exit non-zero."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def extract(
    cache: Path = typer.Option(..., "--cache", help="Zarr store to write (created if absent; resumes if present)."),
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
    no_face: bool = typer.Option(False, "--no-face", help="Use whole frames instead of detected face crops."),
    face_margin: float = typer.Option(0.25, help="Margin around the detected face box, as a fraction of its size."),
    detect_every: int = typer.Option(1, help="Run the face detector on every k-th frame; the frames between reuse its box."),
    audio_align: str = typer.Option("centered", help="centered | causal (a frame's audio feature uses no later samples)."),
    frames_fps: float = typer.Option(30.0, help="Frame rate of --frames-dir input (for timestamps)."),
    prompts: list[str] = typer.Option(["expr8", "va9"], "--prompts", help="Prompt sets encoded with each CLIP backbone."),
    seed: int = typer.Option(0, help="Seed of tiny random-weight backbones."),
) -> None:
    """Decode videos, crop faces, run frozen backbones and cache per-frame embeddings (resumable)."""
    from cache.errors import CacheError
    from common.registry import UnknownNameError
    from pipeline.extract import ExtractConfig, run_extract
    from pipeline.report import ExtractProgress, print_summary

    if (video_dir is None) == (frames_dir is None) and frames_dir is None:
        _fail("give --video-dir or --frames-dir")
    if audio_align not in ("centered", "causal"):
        _fail(f"--audio-align must be centered or causal, not {audio_align!r}")
    vids: list[str] | Path | None = None
    if videos:
        vids = Path(videos) if Path(videos).is_file() else [v.strip() for v in videos.split(",") if v.strip()]
    cfg = ExtractConfig(cache=cache, backbones=backbone, video_dir=video_dir, frames_dir=frames_dir, videos=vids,
                        device=device, batch_size=batch_size, decode_workers=decode_workers, no_face=no_face,
                        face_margin=face_margin, detect_every=detect_every, audio_align=audio_align, frames_fps=frames_fps,
                        prompt_sets=tuple(prompts), seed=seed)
    try:
        with ExtractProgress() as prog:
            results = run_extract(cfg, prog)
    except (CacheError, UnknownNameError, ValueError, FileNotFoundError) as e:
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
    from pipeline.extract import encode_prompt_sets

    custom = None
    if file is not None:
        lines = [ln.strip() for ln in file.read_text().splitlines() if ln.strip()]
        if not lines:
            _fail(f"{file}: no prompts in file")
        custom = {name: lines}
    try:
        done = encode_prompt_sets(cache, backbone, list(prompt_set), device, custom)
    except (ValueError, KeyError) as e:
        _fail(str(e))
    for n, k in done:
        typer.echo(f"{n}: {k} prompts encoded with {backbone}")


@cache_app.command("ls")
def cache_ls(cache: Path = typer.Argument(..., help="Feature cache path.")) -> None:
    """One line per feature set: dim, videos ok / failed / incomplete, frames."""
    from rich.console import Console
    from rich.table import Table

    from cache.verify import summary

    rows = _cache_call(summary, cache)
    t = Table(title=str(cache))
    for col in ("feature_set", "dim", "videos_ok", "failed", "incomplete", "frames"):
        t.add_column(col)
    for r in rows:
        t.add_row(*[str(r[c]) for c in ("feature_set", "dim", "videos_ok", "failed", "incomplete", "frames")])
    Console().print(t)


@cache_app.command("info")
def cache_info(cache: Path = typer.Argument(...), feature_set: Optional[str] = typer.Argument(None)) -> None:
    """Fingerprints, prompt sets and the manifest of a cache (or of one feature set)."""
    import json as _json

    from cache.store import FeatureStore

    store = _cache_call(FeatureStore, cache, mode="r")
    specs = [feature_set] if feature_set else store.feature_sets()
    for s in specs:
        fp = _cache_call(store.fingerprint, s)
        typer.echo(f"== {s}\n{_json.dumps(fp, indent=2, sort_keys=True)}")
        fails = store.failures(s)
        typer.echo(f"videos: {len(store.videos(s))} ok, {len(fails)} failed, {len(store.incomplete(s))} incomplete")
        for v, e in fails.items():
            typer.echo(f"  failed {v}: {e}")
    for n, s in store.text_sets():
        typer.echo(f"prompt set {n} @ {s}: {len(store.read_text_embeddings(n, s)[0])} prompts")


@cache_app.command("verify")
def cache_verify(cache: Path = typer.Argument(...),
                 quick: bool = typer.Option(False, help="Skip re-reading arrays (structure only).")) -> None:
    """Check shapes, dtypes, finiteness, timestamps and checksums; exit 1 on any problem."""
    from cache.verify import verify

    problems = _cache_call(verify, cache, deep=not quick)
    for p in problems:
        typer.secho(f"problem: {p}", fg=typer.colors.RED)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{cache}: ok")


@cache_app.command("rm")
def cache_rm(cache: Path = typer.Argument(...), feature_set: str = typer.Argument(...)) -> None:
    """Remove one feature set (e.g. to re-extract it with another backbone)."""
    from cache.store import FeatureStore

    store = _cache_call(FeatureStore, cache, mode="a")
    _cache_call(store.remove_feature_set, feature_set)
    store.write_manifest()
    typer.echo(f"removed {feature_set} from {cache}")


@cache_app.command("export-h5")
def cache_export_h5(cache: Path = typer.Argument(...), out: Path = typer.Argument(...),
                    feature_set: Optional[list[str]] = typer.Option(None, "--feature-set")) -> None:
    """Export feature sets (all by default) to one HDF5 file."""
    from cache.h5io import export_h5

    typer.echo(f"wrote {_cache_call(export_h5, cache, out, feature_set or None)}")


@cache_app.command("import-h5")
def cache_import_h5(src: Path = typer.Argument(...), cache: Path = typer.Argument(...),
                    spec: Optional[str] = typer.Option(None, help="Feature-set name for a foreign HDF5 file."),
                    fps: float = typer.Option(30.0, help="Frame rate for timestamps of a foreign file.")) -> None:
    """Import an HDF5 file (an affcli export, or per-video [n_frames, dim] datasets) into a cache."""
    from cache.h5io import import_h5

    for s, n in _cache_call(import_h5, src, cache, spec, fps).items():
        typer.echo(f"{s}: {n} videos imported")


def _cache_call(fn, *args, **kwargs):
    """Run a cache function, turning its errors into one-line CLI errors."""
    from cache.errors import CacheError

    try:
        return fn(*args, **kwargs)
    except CacheError as e:
        _fail(str(e))


# ===== section: heads (train-head, predict, evaluate, score) =====


# ===== section: ablate =====

@app.command("ablate")
def ablate(
    target: str = typer.Argument(..., metavar="GRID|report",
                                 help="A grid spec (.toml/.yaml) to run, or the word 'report' to rebuild tables."),
    report_dir: Optional[Path] = typer.Argument(None, metavar="[DIR]", help="With 'report': the ablation --out folder."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache (Zarr); overrides the grid's base.cache."),
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
    from heads.ablate.command import ablate_command, report_command

    if target == "report":
        if report_dir is None:
            _fail("affcli ablate report DIR: give the ablation folder")
        raise typer.Exit(report_command(report_dir))
    if report_dir is not None:
        _fail(f"unexpected argument {report_dir}; did you mean `affcli ablate report {report_dir}`?")
    raise typer.Exit(ablate_command(Path(target), cache, labels, out, jobs, dask_local, scheduler, device, dry_run))



# ===== section: pc =====


# ===== section: demo (lead) =====

@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the synthetic data, cache and runs."),
    videos: int = typer.Option(6, help="Number of synthetic videos."),
    seconds: float = typer.Option(8.0, help="Length of each video."),
    seed: int = typer.Option(0),
) -> None:
    """Offline end-to-end demo on synthetic videos: extract with tiny backbones and show the cache."""
    from rich.console import Console

    from pipeline.demo import demo_extract
    from pipeline.report import ExtractProgress, print_summary

    console = Console()
    with ExtractProgress() as prog:
        ds, cache, results = demo_extract(out, videos, seconds, seed, prog)
    print_summary(results, console)
    cache_ls(cache)
    console.print(f"labels: {ds.label_root}\ncache:  {cache}")


if __name__ == "__main__":
    app()
