"""Bodies of the `affcli pc` commands: each loads, runs one job, prints its answer and returns the exit status."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from affcli.common.commands import EXIT_OK
from affcli.common.progress import progress_bar
from affcli.common.threads import configure_threads
from affcli.pointcloud.chunked import upsample_large
from affcli.pointcloud.config import TrainConfig
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.options import EvalOptions, MakeDataOptions, MakeTestOptions, MetricsOptions, UpsampleOptions
from affcli.pointcloud.runtime import resolve_device
from affcli.pointcloud.upsample import Merge, check_ratio, default_batch, load_upsampler, model_choice

DEFAULT_MAX_MEMORY_MIB = 2048


LOG_EVERY_S = 10.0


class ProgressLog:
    """Progress lines for logs (stderr not a terminal, where the bar does not show): `progress: <what> pass p: chunk
    d/t, s elapsed, ~s left in this pass` at most every LOG_EVERY_S seconds, so short runs print none."""

    def __init__(self, what: str, start: float, every: float | None = None, stream=None) -> None:
        self.what, self.start, self.stream = what, start, stream or sys.stderr
        self.every = LOG_EVERY_S if every is None else every
        self.last = self.pass_start = self.prev = start
        self.pass_no = 0
        self.on = not self.stream.isatty()

    def __call__(self, p: int, done: int, total: int) -> None:
        now = time.perf_counter()
        if p != self.pass_no:  # the pass began when the previous one reported its last chunk
            self.pass_no, self.pass_start = p, self.prev
        self.prev = now
        if self.on and now - self.last >= self.every:
            self.last = now
            left = (now - self.pass_start) / done * (total - done) if 0 < done < total else 0.0
            eta = f", ~{left:.0f} s left in this pass" if left else ""
            self.stream.write(f"progress: {self.what} pass {p + 1}: chunk {done}/{total}, "
                              f"{now - self.start:.0f} s elapsed{eta}\n")
            self.stream.flush()


def upsample_file(
    run: Path | None,
    inp: Path,
    ratio: float | str,
    out: Path,
    device: str = "auto",
    batch: int | None = None,
    merge: Merge = "auto",
    render: bool = False,
    max_memory: float = DEFAULT_MAX_MEMORY_MIB,
    threads: int | None = None,
    fill: bool = True,
) -> dict[str, Any]:
    """Upsample one cloud file with a trained run (None: the shipped default model) within `max_memory` MiB of
    working memory (in chunks when needed, progress shown); torch threads as the process may use; optional
    before/after PNG beside the output. Any ratio > 1 (x2.5, x6: exactly round(ratio N) points)."""
    ratio = check_ratio(ratio)
    dev = resolve_device(device)
    n_threads = configure_threads(threads)
    model = load_upsampler(run, dev)
    xyz = read_cloud(inp)
    t = time.perf_counter()
    with progress_bar("chunks", transient=True) as bar:
        task = bar.add_task(f"x{ratio:g} {inp.name}", total=None, info="")

        log = ProgressLog(f"x{ratio:g} {inp.name}", t)

        def report(p: int, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, info=f"pass {p + 1}")
            log(p, done, total)

        up = upsample_large(model, xyz, ratio, max_memory, batch or default_batch(dev), merge, report, name=str(inp),
                           fill=fill)
    sec = time.perf_counter() - t
    write_cloud(out, up)
    info: dict[str, Any] = {"input_points": len(xyz), "output_points": len(up), "seconds": sec, "out": str(out),
                            "threads": n_threads, "fill": fill}
    if render:
        from affcli.pointcloud.render import render_before_after

        info["render"] = str(render_before_after(xyz, up, out.with_suffix(".png"), f"{inp.name} x{ratio:g}"))
    return info


def default_output(inp: Path, ratio: str | float) -> Path:
    """<input stem>_x<ratio>.xyz beside the input (the ratio as given, checked first)."""
    return inp.with_name(f"{inp.stem}_x{check_ratio(ratio):g}.xyz")


def evaluate_levels(noise: str | None, noise_seed: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
    """`evaluate_run` once per input-noise level of `noise` ('0.01,0.02'; None: clean inputs only), each into its own
    folder; the levels are checked before any work starts."""
    from affcli.pointcloud.evaluate import evaluate_run
    from affcli.pointcloud.noise import parse_levels

    levels = [0.0] if noise is None else parse_levels(noise)
    check_ratio(kwargs.get("ratio", 4))
    out = kwargs.pop("out_dir", None)
    return [evaluate_run(**kwargs, noise=level, noise_seed=noise_seed,
                         out_dir=None if out is None else Path(out) / f"noise{level:g}" if len(levels) > 1 else out)
            for level in levels]


# ----- bodies of the `affcli pc` commands: each returns the exit status, expected errors are one line (exit 2) -----

def pc_guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a pointcloud function, turning its expected errors into one-line CLI errors."""
    from affcli.common.commands import guarded
    from affcli.common.registry import UnknownNameError
    from affcli.pointcloud.errors import PointCloudError

    return guarded((PointCloudError, UnknownNameError, FileNotFoundError), fn, *args, **kwargs)


def train_command(cfg: TrainConfig) -> int:
    """Train (or resume) one run; prints epochs done and the final loss."""
    from affcli.pointcloud.train import train

    m = pc_guarded(train, cfg)
    loss = "-" if m["final_loss"] is None else f"{m['final_loss']:.6f}"
    typer.echo(f"{cfg.out}: {m['epochs_done']} epochs, final loss {loss}"
               + (f" (stopped: {m['stopped']})" if m["stopped"] else ""))
    return EXIT_OK


def make_data_command(o: MakeDataOptions) -> int:
    """Training patches from meshes and procedural shapes; prints the file written."""
    from affcli.pointcloud.data import make_pugan_h5

    typer.echo(str(pc_guarded(make_pugan_h5, o.meshes, o.out, patches_per_mesh=o.patches_per_mesh, seed=o.seed,
                              procedural=o.procedural, exclude_near=o.exclude_near)))
    return EXIT_OK


def make_test_command(o: MakeTestOptions) -> int:
    """Input / ground-truth pairs from meshes; prints how many clouds were written."""
    from affcli.pointcloud.data import make_test_pairs

    typer.echo(f"{len(pc_guarded(make_test_pairs, o.meshes, o.out, o.n_in, o.n_gt, o.seed))} clouds written under "
               f"{o.out}")
    return EXIT_OK


def upsample_command(cloud: Path | None, o: UpsampleOptions) -> int:
    """Upsample the cloud given once (CLOUD or --input) to exactly round(ratio N) points; prints counts and time."""
    from affcli.common.commands import fail

    if (cloud is None) == (o.input is None):
        fail("pc upsample: give the input cloud once, as an argument or as --input")
    inp = cloud or o.input
    out = o.out or pc_guarded(default_output, inp, o.ratio)
    run, fill = pc_guarded(model_choice, o.run, o.weights, o.fill)
    info = pc_guarded(upsample_file, run, inp, o.ratio, out, o.device, o.batch, o.merge, o.render, o.max_memory,
                      o.threads, fill)
    typer.echo(f"{info['input_points']} -> {info['output_points']} points in {info['seconds']:.2f}s "
               f"({info['threads']} thread{'s' if info['threads'] != 1 else ''}): {out}")
    return EXIT_OK


def eval_command(o: EvalOptions) -> int:
    """Score the run, the prior, midpoints and the input on a test folder (one table per noise level), after the
    train/test overlap line."""
    from rich.console import Console

    from affcli.pointcloud.evaluate import levels_table, results_table
    from affcli.pointcloud.leak import overlap_line

    run, fill = pc_guarded(model_choice, o.run, o.weights, o.fill)
    results = pc_guarded(evaluate_levels, o.noise, o.noise_seed, run=run, test_dir=o.test_dir, mesh_dir=o.mesh_dir,
                         convention=o.convention, ratio=o.ratio, device=o.device, renders=o.renders,
                         allow_overlap=o.allow_overlap, out_dir=o.out, fill=fill)
    typer.echo(overlap_line(results[0]["leak"]))
    console = Console()
    for res in results:
        console.print(results_table(res))
        console.print(results_table(res, frame="gt"))
    if len(results) > 1:
        console.print(levels_table(results))
    return EXIT_OK


def metrics_command(o: MetricsOptions) -> int:
    """CD, HD (and P2F with a mesh) of one predicted cloud against its ground truth, on one line."""
    from affcli.pointcloud.evaluate import score_pair

    res = pc_guarded(score_pair, o.pred, o.gt, o.mesh, o.convention, o.device)
    typer.echo(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return EXIT_OK
