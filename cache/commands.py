"""Bodies of the `affcli cache` commands (ls, info, verify, rm, set-modality, export-h5, import-h5): call the cache
API, print its answer, turn CacheError into one line; each returns the exit status."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from affcli.cache.errors import CacheError
from affcli.cache.options import ExportOptions, ImportOptions, VerifyOptions
from affcli.common.commands import EXIT_FAILED, EXIT_OK, guarded


def ls_command(cache: str) -> int:
    """One row per feature set: modality, dim, videos ok / failed / incomplete, frames."""
    from rich.console import Console
    from rich.table import Table

    from affcli.cache.verify import summary

    rows = guarded((CacheError,), summary, cache)
    t = Table(title=str(cache))
    cols = ("feature_set", "modality", "dim", "videos_ok", "failed", "incomplete", "frames")
    for col in cols:
        t.add_column(col)
    for r in rows:
        t.add_row(*[str(r[c]) for c in cols])
    Console().print(t)
    return EXIT_OK


def info_command(cache: str, feature_set: str | None) -> int:
    """Fingerprints, failures and prompt sets of a cache (or of one feature set)."""
    from affcli.cache.verify import info

    rep = guarded((CacheError,), info, cache, feature_set)
    for r in rep["feature_sets"]:
        typer.echo(f"== {r['feature_set']}\n{json.dumps(r['fingerprint'], indent=2, sort_keys=True)}")
        typer.echo(f"videos: {r['videos_ok']} ok, {len(r['failures'])} failed, {r['incomplete']} incomplete")
        for v, e in r["failures"].items():
            typer.echo(f"  failed {v}: {e}")
    for p in rep["prompt_sets"]:
        typer.echo(f"prompt set {p['name']} @ {p['spec']}: {p['prompts']} prompts")
    return EXIT_OK


def verify_command(cache: str, o: VerifyOptions, weights=None) -> int:
    """Every problem on its own line (exit 1), or `<cache>: ok`; `weights` (cache.verify.WeightsHash, given when
    `o.weights`) also checks the fingerprints' weights hashes; notes (sound but unchecked data) are printed without
    failing; `o.rebuild_manifest` rewrites manifest.parquet from the video groups afterwards."""
    from affcli.cache.store import FeatureStore
    from affcli.cache.verify import verify

    notes: list[str] = []
    problems = guarded((CacheError,), verify, cache, deep=not o.quick, weights=weights, seed=o.seed, notes=notes)
    for n in notes:
        typer.echo(f"note: {n}")
    if o.rebuild_manifest:
        path = guarded((CacheError,), lambda: FeatureStore(cache, mode="r+").write_manifest())
        typer.echo(f"rebuilt {path}")
        problems = [p for p in problems if not p.startswith("manifest.parquet:")]
    for p in problems:
        typer.secho(f"problem: {p}", fg=typer.colors.RED)
    if problems:
        return EXIT_FAILED
    typer.echo(f"{cache}: ok")
    return EXIT_OK


def rm_command(cache: str, feature_set: str) -> int:
    """Remove one feature set."""
    from affcli.cache.store import FeatureStore

    store = guarded((CacheError,), FeatureStore, cache, mode="r+")
    guarded((CacheError,), store.remove_feature_set, feature_set)
    typer.echo(f"removed {feature_set} from {cache}")
    return EXIT_OK


def set_modality_command(cache: str, feature_set: str, modality: str) -> int:
    """Record the modality of a feature set written before fingerprints carried one."""
    from affcli.cache.store import FeatureStore

    store = guarded((CacheError,), FeatureStore, cache, mode="r+")
    guarded((CacheError,), store.set_modality, feature_set, modality)
    typer.echo(f"{feature_set}: modality {modality}")
    return EXIT_OK


def export_h5_command(cache: Path, out: Path, o: ExportOptions) -> int:
    """Export feature sets (all by default) to one HDF5 file (an existing file only with `o.overwrite`)."""
    from affcli.cache.h5io import export_h5

    typer.echo(f"wrote {guarded((CacheError,), export_h5, cache, out, o.feature_set or None, o.overwrite)}")
    return EXIT_OK


def import_h5_command(src: Path, cache: Path, o: ImportOptions) -> int:
    """Import an HDF5 file (an affcli export, or per-video [n_frames, dim] datasets) into a cache."""
    from affcli.cache.h5io import import_h5

    for s, n in guarded((CacheError,), import_h5, src, cache, o.spec, o.fps, o.modality).items():
        typer.echo(f"{s}: {n} videos imported")
    return EXIT_OK
