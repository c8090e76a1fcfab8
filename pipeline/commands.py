"""Bodies of `affcli extract` and `affcli prompts`: progress, the run, the summary; user errors become one line on
stderr. Each returns the exit code (0 ok, 1 a video failed, 2 refused)."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from affcli.cache.errors import CacheError
from affcli.common.cluster import ClusterOptions
from affcli.common.notices import warn
from affcli.common.registry import UnknownNameError
from affcli.pipeline.config import ExtractConfig, PromptsOptions
from affcli.pipeline.errors import Interrupted

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130


def _refused(e: BaseException) -> int:
    """One error line on stderr; the refused exit code."""
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]error[/red]: {escape(str(e))}")
    return EXIT_REFUSED


def interrupted(e: KeyboardInterrupt, what: str) -> int:
    """The one line a Ctrl-C gets (what was kept, how to resume) on stderr; exit code 130, as a shell reports SIGINT."""
    line = e.line() if isinstance(e, Interrupted) else (f"{what} interrupted (Ctrl-C): videos written so far are "
                                                         f"complete; run the same command again to resume")
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[yellow]{escape(line)}[/yellow]")
    return EXIT_INTERRUPTED


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show each warning of the run as one `warning: ...` line (a bad frame or input names its file), not Python's
    two-line `file:line: UserWarning` form."""
    with warnings.catch_warnings():  # the filters stay as they are (library deprecations stay quiet)
        warnings.showwarning = lambda message, *args, **kw: warn(str(message))
        yield


def extract_command(cfg: ExtractConfig, cluster: ClusterOptions | None = None) -> int:
    """Extract `cfg` here or on the cluster the options name, with the progress bar and the summary table."""
    from affcli.pipeline.backbones.base import BackboneError
    from affcli.pipeline.distributed import run_extraction
    from affcli.pipeline.report import ExtractProgress, print_summary
    from affcli.pipeline.wheel_weights import WeightsFetchError

    try:
        with one_line_warnings(), ExtractProgress() as prog:
            results = run_extraction(cfg, cluster, prog)
    except (CacheError, UnknownNameError, ValueError, FileNotFoundError, BackboneError, WeightsFetchError) as e:
        return _refused(e)
    except KeyboardInterrupt as e:
        return interrupted(e, "extract")
    return EXIT_FAILED if print_summary(results)["failed"] else EXIT_OK


def prompts_command(o: PromptsOptions) -> int:
    """Encode the named prompt sets (none named: the default ones) and a prompt file as set `o.name` into the cache;
    one line per set. A built-in set or a cached set is not replaced by other prompts without `o.overwrite`."""
    from affcli.pipeline.config import DEFAULT_PROMPT_SETS
    from affcli.pipeline.prompt_encode import encode_prompt_sets

    cache, backbone, sets, device, prompt_file, file_set, overwrite = (o.cache, o.backbone, o.sets, o.device, o.file,
                                                                       o.name, o.overwrite)

    try:
        with one_line_warnings():
            done = encode_prompt_sets(cache, backbone, list(sets or DEFAULT_PROMPT_SETS), device,
                                      prompt_file=prompt_file, file_set=file_set, overwrite=overwrite,
                                      defaults=not sets)
    except (ValueError, KeyError, UnknownNameError, OSError, CacheError) as e:
        return _refused(e)
    for name, n in done:
        print(f"{name}: {n} prompts encoded with {backbone}")
    return EXIT_OK
