"""Bodies of `affcli extract` and `affcli prompts`: progress, the run, the summary; user errors become one line on
stderr. Each returns the exit code (0 ok, 1 a video failed, 2 refused)."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from affcli.cache.errors import CacheError
from affcli.common.cluster import ClusterOptions
from affcli.common.registry import UnknownNameError
from affcli.pipeline.config import ExtractConfig

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def _refused(e: BaseException) -> int:
    """One error line on stderr; the refused exit code."""
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]error[/red]: {escape(str(e))}")
    return EXIT_REFUSED


def extract_command(cfg: ExtractConfig, cluster: ClusterOptions | None = None) -> int:
    """Extract `cfg` here or on the cluster the options name, with the progress bar and the summary table."""
    from affcli.pipeline.backbones.base import BackboneError
    from affcli.pipeline.distributed import run_extraction
    from affcli.pipeline.report import ExtractProgress, print_summary
    from affcli.pipeline.wheel_weights import WeightsFetchError

    try:
        with ExtractProgress() as prog:
            results = run_extraction(cfg, cluster, prog)
    except (CacheError, UnknownNameError, ValueError, FileNotFoundError, BackboneError, WeightsFetchError) as e:
        return _refused(e)
    return EXIT_FAILED if print_summary(results)["failed"] else EXIT_OK


def prompts_command(cache: Path, backbone: str, sets: list[str], device: str, prompt_file: Path | None,
                    file_set: str) -> int:
    """Encode the named prompt sets (and a prompt file as set `file_set`) into the cache; one line per set."""
    from affcli.pipeline.prompt_encode import encode_prompt_sets

    try:
        done = encode_prompt_sets(cache, backbone, sets, device, prompt_file=prompt_file, file_set=file_set)
    except (ValueError, KeyError, UnknownNameError, OSError, CacheError) as e:
        return _refused(e)
    for name, n in done:
        print(f"{name}: {n} prompts encoded with {backbone}")
    return EXIT_OK
