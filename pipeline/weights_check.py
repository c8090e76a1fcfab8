"""The weights hash of a backbone rebuilt offline, for `affcli cache verify --weights` (cache/ checks the hash it is
given and never imports a backbone): only specs whose weights need no download are rebuilt."""
from __future__ import annotations

from pathlib import Path


def weights_at_hand(spec: str) -> bool:
    """True for specs whose weights need no download: tiny, <model>/random, an existing local file or folder (also
    as `<model>/<path>`), or a kind whose weights ship in an installed package (registered with `offline=True`)."""
    from affcli.pipeline.backbones.spec import split_spec

    kind, name, _ = split_spec(spec)
    if name == "tiny" or name.endswith("/random"):
        return True
    if name.startswith(("/", ".", "~")) and Path(name).expanduser().exists():
        return True
    _, sep, tail = name.partition("/")
    if sep and tail.startswith(("/", ".", "~")) and Path(tail).expanduser().exists():
        return True
    from affcli.pipeline.backbones import BACKBONES

    return kind in BACKBONES and bool(BACKBONES.meta(kind).get("offline"))


def offline_weights_sha256(spec: str, seed: int = 0) -> str | None:
    """The sha256 of `spec`'s weights rebuilt on the CPU (random-weight specs with `seed`), or None when they are not
    at hand offline; a spec that cannot be rebuilt raises (cache.verify reports it as one line)."""
    if not weights_at_hand(spec):
        return None
    from affcli.pipeline.backbones import build_backbone

    return build_backbone(spec, "cpu", seed=seed).weights_sha256()
