"""Options and bodies of `affcli train-head`, `predict`, `evaluate`, `score` and `cache teacher`: config merging,
one-line errors, summaries; each body returns the exit code (cli.py only parses, with these option dataclasses)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from affcli.common.cli_options import option
from affcli.common.cluster import ClusterOptions
from affcli.common.registry import UnknownNameError

EXIT_OK, EXIT_REFUSED = 0, 2
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, UnknownNameError)
RUN_CACHE_HELP = "Feature cache holding the run's feature sets (default: the run's, from its config.json)."
RUN_LABELS_HELP = "Aff-Wild2 annotation root (default: the run's, from its config.json)."
SKIP_BAD_HELP = "Leave out videos whose cached arrays fail their checksum or fingerprint (one warning line each)."
LABELS_HELP = ("Labels: the ABAW annotation folder, a challenge folder (Train_Set/Validation_Set parent) or a flat "
               "folder of one split's per-video txt files")


@dataclass
class PredictOptions:
    """`affcli predict`."""

    run: Path = option(help="A train-head run folder.")
    out: Path = option(help="Folder for the ABAW prediction files.")
    cache: str | None = option(None, help=RUN_CACHE_HELP)
    labels: Path | None = option(None, help=RUN_LABELS_HELP + " Read only with --split.")
    split: str | None = option(None, help="Predict the videos of this labelled split (needs the run's labels).")
    videos: str | None = option(None, help="Only these ids: comma list or a file of ids (default: all cached).")
    style: str = option("single-file", help="single-file (ABAW5+) or per-video (ABAW3 txt per video; not for tasks "
                                            "with one row per image).")
    au_threshold: float | None = option(None, help="AU decision threshold on the sigmoid (default: the run's tuned "
                                                   "per-AU thresholds, else 0.5).")
    smooth: int | None = option(None, help="Average predictions over +-N frames per video (default: the run's).")
    device: str | None = option(None, help="auto, cpu, cuda.")
    skip_bad: bool = option(False, help=SKIP_BAD_HELP)
    cluster: ClusterOptions = option(ClusterOptions, help="Dask engine.")


@dataclass
class EvaluateOptions:
    """`affcli evaluate`."""

    run: Path = option(help="A train-head run folder.")
    cache: str | None = option(None, help=RUN_CACHE_HELP)
    labels: Path | None = option(None, help=RUN_LABELS_HELP)
    split: str | None = option(None, help="Split to score (default: the run's val split).")
    smooth: int | None = option(None, help="Average predictions over +-N frames per video before scoring.")
    device: str | None = option(None, help="auto, cpu, cuda.")
    skip_bad: bool = option(False, help=SKIP_BAD_HELP)


@dataclass
class TeacherOptions:
    """`affcli cache teacher` (besides its CACHE argument)."""

    run: list[str] = option(help="Finished train-head run(s): repeat or give a comma list.")
    videos: str | None = option(None, help="Only these ids: comma list or a file of ids (default: all cached).")
    device: str | None = option(None, help="auto, cpu, cuda (default: the run's).")
    cluster: ClusterOptions = option(ClusterOptions, help="Dask engine.")


@dataclass
class ScoreOptions:
    """`affcli score`."""

    task: str = option(help="Task.")
    pred: Path = option(help="ABAW predictions: a folder of per-id txt files or the one file per task.")
    labels: Path = option(help=LABELS_HELP + " (or the task's annotation file).")
    split: str = option("val", help="train or val.")
    edition: str = option("abaw3+", help="abaw3+ (8-class F1, mean AU F1) or abaw1-2 (F1/accuracy mix).")
    tolerance: int = option(0, help="Prediction rows a video may lack (last prediction carried).")
    zero_division: int = option(0, help="F1 of a class/AU with neither labels nor predictions: 0 (official) or 1.")
    frames: str = option("own", help="Frames that count: own (each task on its labelled frames) or complete (only "
                                     "frames labelled for every task).")


@dataclass
class AblateOptions:
    """`affcli ablate GRID` (besides its arguments)."""

    cache: str | None = option(None, help="Feature cache (Zarr folder or fsspec URL); overrides the grid's base.cache.")
    labels: Path | None = option(None, help="Aff-Wild2 annotation root; overrides base.labels.")
    out: Path | None = option(None, help="Ablation folder: runs/<name>/, grid.json, ablation.md/.csv/.tex/.png.")
    jobs: int = option(1, short="-j", help="Local worker processes, each loading the data once (0 = as many as fit: "
                                           "cores on CPU, free memory on CUDA).")
    dask_local: int = option(0, help="Start a local Dask cluster with N worker processes.")
    scheduler: str | None = option(None, help="Run on a Dask cluster: tcp://host:port.")
    device: str | None = option(None, help="Override base.device (cpu, cuda, cuda:1).")
    dry_run: bool = option(False, help="Validate and list the runs; run nothing.")
    search: str | None = option(None, help="Search instead of a full grid: 'optuna' samples --trials settings of the "
                                           "axes (lists are categorical; `lr = {log = [1e-4, 1e-2]}`, `window = {int "
                                           "= [16, 128]}`, `dropout = {float = [0, 0.5]}` are ranges) with Optuna's "
                                           "TPE, prunes trials on validation per epoch and keeps the study in "
                                           "DIR/search.db, so a killed search resumes.", shown="off: the full grid")
    trials: int = option(20, help="With --search: trials in all (finished or pruned ones of earlier invocations "
                                  "count).")
    mlflow: str | None = option(None, help="Also log every run to this MLflow tracking server URI.", shown="off")


@dataclass
class EnsembleOptions:
    """`affcli ensemble RUN...` (besides its RUN arguments)."""

    out: Path = option(help="The ensemble's run folder (must not exist yet); predict, evaluate, score, submit and "
                            "(if every member is causal) stream read it like any run.")
    method: str = option("mean", help="mean (average probabilities and values), vote (majority of the members' own "
                                      "decisions; values averaged) or weighted (member weights fitted on the "
                                      "validation split, or on the out-of-fold predictions when every member is a "
                                      "fold run with the same folds; metrics.json states which).")
    cache: str | None = option(None, help="Feature cache holding every member's feature sets (default: the first "
                                          "member's).")
    labels: Path | None = option(None, help="Annotation root for the validation split (default: the first member's).")
    device: str | None = option(None, help="auto, cpu, cuda.")


@dataclass
class SubmitOptions:
    """`affcli submit`."""

    run: Path = option(help="A run folder of any kind: one run, a fold run (its fold models averaged) or an ensemble.")
    test_list: Path = option(help="The organisers' list of test video ids, one per line (`#` comments allowed).")
    task: str = option(help="Task of the package (the run's task).")
    out: Path = option(help="The zip to write (an existing file is replaced only once the new package is checked; "
                            "a folder or link there is refused).")
    edition: str = option("abaw10", help="ABAW edition: abaw3 (one txt per id in the task's challenge folder) or "
                                         "abaw4 ... abaw10 (one predictions_<task>.txt, `image_location,...` rows; "
                                         "MTL `image,...`).")
    cache: str | None = option(None, help="Feature cache holding the test videos (default: the run's).")
    device: str | None = option(None, help="auto, cpu, cuda.")


def _err(console: Console, e: BaseException, run: Path | None = None) -> int:
    """Print one error line (prefixed `run R:` for the commands that read a run folder); the refused exit code."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    console.print(f"[red]error[/red]: {f'run {run}: ' if run is not None else ''}{msg}", highlight=False, soft_wrap=True)
    return EXIT_REFUSED


def _merge(config: Path | None, flags: dict[str, Any]):
    from affcli.heads.config import RunConfig

    over = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if v is not None}
    if config is not None:
        return RunConfig.load(config, **over)
    return RunConfig.from_dict(over)


def train_head_command(config: Path | None, flags: dict[str, Any], console: Console | None = None) -> int:
    """Merge --config and flags, train, print the best val metrics."""
    from affcli.cache.errors import CacheError
    from affcli.heads.train.folds import run_training

    console = console or Console()
    try:
        cfg = _merge(config, flags)
        if cfg.name is None:
            cfg.name = Path(cfg.out).name
        m = run_training(cfg, progress=True)
    except (*USER_ERRORS, CacheError, FloatingPointError) as e:
        return _err(console, e)
    if m.get("kind") == "folds":
        for f in m["folds"]:
            console.print(f"fold {f['fold']}: {f['videos']} videos, best epoch {f['best_epoch']}/{f['epochs']}, "
                          f"main {f['main']:.4f}", highlight=False)
        extra = f"; out-of-fold {m['oof']['main']:.4f}"
        if "official_val" in m:
            extra += f"; official val (fold {m['official_val']['fold']}) {m['official_val']['main']:.4f}"
        console.print(f"[bold]{cfg.task}[/bold] {m['k']}-fold main {m['main']:.4f} ± {m['main_std']:.4f} "
                      f"(sample std){extra}  -> {cfg.out}", highlight=False)
        return EXIT_OK
    val = ", ".join(f"{k} {v:.4f}" for k, v in m["val"].items() if isinstance(v, float))
    console.print(f"[bold]{cfg.task}[/bold] best epoch {m['best_epoch']}/{m['epochs']}: {val}  -> {cfg.out}")
    return EXIT_OK


@contextmanager
def _video_progress(description: str, console: Console, cluster: Any) -> Iterator[Any]:
    """A progress callback of the Dask engine (`start`, then one `video` event per video done, cluster-wide) drawn as
    the house bar; None without a cluster (one process)."""
    if not cluster:
        yield None
        return
    from affcli.common.progress import progress_bar

    with progress_bar("videos", console=console, transient=True) as bar:
        task: list[Any] = []

        def on(event: str, info: dict) -> None:
            if event == "start":
                task.append(bar.add_task(description, total=info["videos"]))
            elif event == "video" and task:
                bar.update(task[0], advance=1, info=info["video"])

        yield on


def predict_command(o: PredictOptions, console: Console | None = None) -> int:
    """Write ABAW prediction files for a run (its stored cache and labels unless overridden); `o.cluster` spreads
    the videos over Dask workers."""
    from affcli.cache.errors import CacheError
    from affcli.common.ids import parse_id_list
    from affcli.heads.infer.predict import predict_run

    console = console or Console()
    vids = parse_id_list(o.videos) if o.videos else None
    try:
        with _video_progress("predict", console, o.cluster) as progress:
            files = predict_run(o.run, o.cache, o.out, split=o.split, videos=vids, style=o.style, device=o.device,
                                au_threshold=o.au_threshold, labels=o.labels, smooth=o.smooth, skip_bad=o.skip_bad,
                                cluster=o.cluster, progress=progress)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e, o.run)
    console.print(f"wrote {len(files)} file(s) to {o.out}")
    return EXIT_OK


def teacher_command(cache: str, o: TeacherOptions, console: Console | None = None) -> int:
    """`affcli cache teacher`: cache each run's soft targets beside the features; one line per run."""
    from affcli.cache.errors import CacheError
    from affcli.common.ids import parse_id_list
    from affcli.heads.train.teacher import cache_teachers

    console = console or Console()
    try:
        run_list = parse_id_list(o.run)
        vids = parse_id_list(o.videos) if o.videos else None
        with _video_progress("teacher", console, o.cluster) as progress:
            done = cache_teachers(cache, run_list, vids, o.device, cluster=o.cluster, progress=progress)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e)
    for run, key, n in done:
        console.print(f"{run}: teacher/{key}: {n} video(s) predicted now", highlight=False, soft_wrap=True)
    return EXIT_OK


def evaluate_command(o: EvaluateOptions, console: Console | None = None) -> int:
    """Re-score a run and print its metrics."""
    from affcli.cache.errors import CacheError
    from affcli.heads.infer.predict import evaluate_run

    console = console or Console()
    try:
        m = evaluate_run(o.run, o.cache, o.labels, o.split, o.device, o.smooth, o.skip_bad)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e, o.run)
    console.print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()
                            if not isinstance(v, (dict, list))))
    return EXIT_OK


def score_command(o: ScoreOptions) -> int:
    """`affcli score`: the metrics as JSON on stdout, or a one-line error."""
    from affcli.heads.infer.score_files import score_command as run

    return run(o.task, o.pred, o.labels, o.split, o.edition, o.tolerance, o.zero_division, o.frames)


def ensemble_command(runs: list[str], o: EnsembleOptions, console: Console | None = None) -> int:
    """`affcli ensemble`: build the ensemble folder, print members vs ensemble."""
    from affcli.cache.errors import CacheError
    from affcli.heads.infer.ensemble import build_ensemble, ensemble_table

    console = console or Console()
    try:
        res = build_ensemble(runs, o.out, o.method, o.cache, str(o.labels) if o.labels else None, o.device)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e)
    console.print(ensemble_table(res))
    if res["weights_fitted_on"]:
        console.print(f"weights fitted on the {res['weights_fitted_on']}", highlight=False)
    console.print(f"-> {o.out}", highlight=False)
    return EXIT_OK


def submit_command(o: SubmitOptions, console: Console | None = None) -> int:
    """`affcli submit`: the checked zip, or one error line."""
    from affcli.cache.errors import CacheError
    from affcli.heads.infer.submit import submit

    console = console or Console()
    try:
        r = submit(o.run, o.test_list, o.task, o.edition, o.out, o.cache, o.device)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e)
    where = f"{r['folder']}/<id>.txt" if r["style"] == "per-video" else f"predictions_{o.task}.txt"
    console.print(f"{o.out}: {r['videos']} videos, {r['frames']} frames ({r['edition']}: {where}); checked against "
                  f"the list, the cached frame counts and the value ranges", highlight=False, soft_wrap=True)
    return EXIT_OK
