"""A run folder is never overwritten silently: train-head and pretrain refuse an `--out` that holds a run unless
`--overwrite`; a run clears the old run's files as it starts writing (so no stale plot or checkpoint is left beside
the new run, and a refused new run leaves the old one as it was); a run stopped by Ctrl-C or an error is marked
(`interrupted.json` / `error.json`), never left looking finished."""
from __future__ import annotations

import time
from pathlib import Path

from affcli.common.runs import CHECKSUMS, write_json

INTERRUPTED = "interrupted.json"
RUN_FILES = ("config.json", "metrics.json", "model.safetensors", "encoder.safetensors", "predictions_val.parquet",
             "curves.png", "confusion.png", "va_density.png", INTERRUPTED, "error.json", "ablate.json",
             CHECKSUMS, "folds.json", "predictions_oof.parquet")
"""What train-head, pretrain and an ablation's runs write into a run folder: a folder holding any of them holds a run."""
RUN_PATTERNS = ("eval_*.json", ".*.tmp*", "events.out.tfevents.*")
"""Files named per use (`evaluate`'s eval_<split>.json, TensorBoard's event files) and the temporary files of atomic
writes."""
ABLATION_FILES = ("grid.json", "ablation.md")


class RunFolderTaken(ValueError):
    """`--out` holds a run (or an ablation) and --overwrite was not given; one line naming what is there."""


def run_files(out: Path) -> list[Path]:
    """The run files present in `out` (none if it is not a folder)."""
    if not out.is_dir():
        return []
    found = [out / n for n in RUN_FILES if (out / n).is_file() or (out / n).is_symlink()]
    for pattern in RUN_PATTERNS:
        found += [p for p in sorted(out.glob(pattern)) if p.is_file() or p.is_symlink()]
    return list(dict.fromkeys(found))


def check_run_folder(out: str | Path, overwrite: bool, what: str = "train-head") -> Path:
    """Refuse, before any work, an `--out` that is not a folder, that holds an ablation, or that holds a run while
    `overwrite` is not given. Nothing is removed here: the run clears the old files (`clear_run_files`) only when it
    starts writing, so a refused or failed new run leaves the old one intact."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderTaken(f"{what}: --out {out} exists and is not a folder")
    taken = [n for n in ABLATION_FILES if (out / n).exists()]
    if taken:
        raise RunFolderTaken(f"{what}: --out {out} holds an ablation ({taken[0]}); choose another folder")
    files = run_files(out)
    if files and not overwrite:
        names = ", ".join(p.name for p in files[:4]) + (" ..." if len(files) > 4 else "")
        raise RunFolderTaken(f"{what}: --out {out} already holds a run ({names}); pass --overwrite to replace it "
                             f"or choose another folder")
    return out


def clear_run_files(out: str | Path, keep: tuple[str, ...] = ("ablate.json",)) -> None:
    """Remove an old run's files from `out` as a new run starts writing there (an ablation's own records in `keep`
    stay), so nothing of the old run is left beside the new one."""
    for p in run_files(Path(out)):
        if p.name not in keep:
            p.unlink()


def mark_interrupted(out: str | Path, what: str, error: BaseException | None = None, since: float | None = None,
                     **info: object) -> bool:
    """Mark a run folder whose run stopped before it finished: `interrupted.json` for Ctrl-C, `error.json` (with the
    one-line error) when `error` stopped it. Nothing to mark if the folder holds no run files, if the run wrote its
    metrics.json (it finished) first, or, with `since` (the run's start, time.time()), if its config.json is older
    (the files are another run's, left as they were); True if marked."""
    out = Path(out)
    if not out.is_dir() or (out / "metrics.json").exists() or not run_files(out):
        return False
    if since is not None and not ((out / "config.json").is_file() and (out / "config.json").stat().st_mtime >= since):
        return False
    record = {"command": what, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    if error is None:
        write_json(out / INTERRUPTED, {"interrupted": True, **record})
    else:
        write_json(out / "error.json", {"type": type(error).__name__, "message": " ".join(str(error).split()),
                                        **record})
    return True
