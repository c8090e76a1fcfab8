"""Bodies of `affcli train-head`, `predict` and `evaluate`: config merging, one-line errors, summaries; return exit codes."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from affcli.common.registry import UnknownNameError

EXIT_OK, EXIT_REFUSED = 0, 2
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, UnknownNameError)


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
    from affcli.heads.train.trainer import train_run

    console = console or Console()
    try:
        cfg = _merge(config, flags)
        if cfg.name is None:
            cfg.name = Path(cfg.out).name
        m = train_run(cfg, progress=True)
    except (*USER_ERRORS, CacheError, FloatingPointError) as e:
        return _err(console, e)
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


def predict_command(run: Path, cache: Path | None, out: Path, split: str | None, videos: str | None, style: str,
                    au_threshold: float | None, device: str | None, smooth: int | None = None,
                    console: Console | None = None, labels: Path | None = None, skip_bad: bool = False,
                    cluster: Any = None) -> int:
    """Write ABAW prediction files for a run (its stored cache and labels unless overridden); `cluster` (a
    common.cluster.ClusterOptions) spreads the videos over Dask workers."""
    from affcli.cache.errors import CacheError
    from affcli.heads.infer.predict import predict_run

    console = console or Console()
    from affcli.common.ids import parse_id_list

    vids = parse_id_list(videos) if videos else None
    try:
        with _video_progress("predict", console, cluster) as progress:
            files = predict_run(run, cache, out, split=split, videos=vids, style=style, device=device,
                                au_threshold=au_threshold, labels=labels, smooth=smooth, skip_bad=skip_bad,
                                cluster=cluster, progress=progress)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e, run)
    console.print(f"wrote {len(files)} file(s) to {out}")
    return EXIT_OK


def teacher_command(cache: str, runs: list[str] | str, videos: str | None, device: str | None, cluster: Any = None,
                    console: Console | None = None) -> int:
    """`affcli cache teacher`: cache each run's soft targets beside the features; one line per run."""
    from affcli.cache.errors import CacheError
    from affcli.common.ids import parse_id_list
    from affcli.heads.train.teacher import cache_teachers

    console = console or Console()
    try:
        run_list = parse_id_list(runs)
        vids = parse_id_list(videos) if videos else None
        with _video_progress("teacher", console, cluster) as progress:
            done = cache_teachers(cache, run_list, vids, device, cluster=cluster, progress=progress)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e)
    for run, key, n in done:
        console.print(f"{run}: teacher/{key}: {n} video(s) predicted now", highlight=False, soft_wrap=True)
    return EXIT_OK


def evaluate_command(run: Path, cache: Path | None, labels: Path | None, split: str | None, device: str | None,
                     smooth: int | None = None, console: Console | None = None, skip_bad: bool = False) -> int:
    """Re-score a run and print its metrics."""
    from affcli.cache.errors import CacheError
    from affcli.heads.infer.predict import evaluate_run

    console = console or Console()
    try:
        m = evaluate_run(run, cache, labels, split, device, smooth, skip_bad)
    except (*USER_ERRORS, CacheError) as e:
        return _err(console, e, run)
    console.print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()
                            if not isinstance(v, (dict, list))))
    return EXIT_OK
