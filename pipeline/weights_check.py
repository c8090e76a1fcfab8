"""The weights hash of a backbone rebuilt offline, for `affcli cache verify --weights` (cache/ checks the hash it is
given and never imports a backbone): only specs whose weights need no download are rebuilt."""
from __future__ import annotations

from pathlib import Path


def weights_at_hand(spec: str) -> bool:
    """True for specs whose weights need no download: tiny, <model>/random, or an existing local file or folder."""
    _, _, name = spec.partition(":")
    return name == "tiny" or name.endswith("/random") or (name.startswith(("/", ".", "~")) and Path(name).expanduser().exists())


def offline_weights_sha256(spec: str, seed: int = 0) -> str | None:
    """The sha256 of `spec`'s weights rebuilt on the CPU (random-weight specs with `seed`), or None when they are not
    at hand offline; a spec that cannot be rebuilt raises (cache.verify reports it as one line)."""
    if not weights_at_hand(spec):
        return None
    from affcli.pipeline.backbones import build_backbone
    from affcli.pipeline.backbones.base import state_dict_sha256

    return state_dict_sha256(build_backbone(spec, "cpu", seed=seed).module)
