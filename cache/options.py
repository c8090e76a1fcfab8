"""Options of the `affcli cache` commands that take more than their arguments (verify, export-h5, import-h5), as
dataclasses the CLI turns into flags; torch- and zarr-free, so `--help` stays fast."""
from __future__ import annotations

from dataclasses import dataclass

from affcli.common.cli_options import option


@dataclass
class VerifyOptions:
    """`affcli cache verify` (besides its CACHE argument)."""

    quick: bool = option(False, help="Skip re-reading arrays (structure only).")
    weights: bool = option(False, help="Also rebuild backbones whose weights need no download (tiny, <model>/random, "
                                       "local checkpoints) and check the fingerprint's weights hash.")
    seed: int = option(0, help="With --weights: the extract --seed of random-weight specs.")
    rebuild_manifest: bool = option(False, help="Rewrite manifest.parquet from the video groups (after a damaged or "
                                                "stale one is reported).")


@dataclass
class ExportOptions:
    """`affcli cache export-h5` (besides CACHE and OUT)."""

    feature_set: list[str] | None = option(None, help="Feature sets to export (repeatable).", shown="all")
    overwrite: bool = option(False, help="Replace an existing file at OUT (never a folder or a device).")


@dataclass
class ImportOptions:
    """`affcli cache import-h5` (besides SRC and CACHE)."""

    spec: str | None = option(None, help="Feature-set name for a foreign HDF5 file.")
    fps: float = option(30.0, help="Frame rate for timestamps of a foreign file.")
    modality: str | None = option(None, help="visual or audio: what a foreign file's features describe (required for "
                                             "one; fills in older affcli exports without it).")
