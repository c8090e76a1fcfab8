"""Prompt lists -> text embeddings in the cache, by every backbone with a text tower (`TextEncoder`, e.g. clip:*):
the one loop `extract` runs after its videos or images and `affcli prompts` runs on demand."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from affcli.cache.store import FeatureStore
from affcli.common.device import resolve_device
from affcli.pipeline.backbones import TextEncoder, build_backbone
from affcli.pipeline.prompts import PROMPT_SETS


def encode_prompts(store: FeatureStore, backbones: Iterable[Any], lists: dict[str, list[str]],
                   skip_cached: bool = True) -> list[tuple[str, str, int]]:
    """Write each named prompt list's embeddings by every text-encoding backbone into `store`; with `skip_cached`
    the (set, backbone) pairs the cache already holds are left alone. Returns (set, spec, prompts) written."""
    have = set(store.text_sets()) if skip_cached else set()
    done = []
    for b in backbones:
        if not isinstance(b, TextEncoder):
            continue
        for name, prompts in lists.items():
            if (name, b.spec) not in have:
                store.write_text_embeddings(name, b.spec, prompts, b.encode_text(prompts))
                done.append((name, b.spec, len(prompts)))
    return done


def named_prompt_sets(names: Iterable[str]) -> dict[str, list[str]]:
    """The named sets' prompts; ValueError naming the unknown ones and the known ones."""
    names = list(names)
    unknown = [n for n in names if n not in PROMPT_SETS]
    if unknown:
        raise ValueError(f"unknown prompt set(s) {', '.join(unknown)}; known: {', '.join(sorted(PROMPT_SETS))}")
    return {n: list(PROMPT_SETS[n]) for n in names}


def read_prompt_file(path: Path) -> list[str]:
    """Prompts of a text file, one per non-blank line; an empty file is a ValueError."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: no prompts in file")
    return lines


def encode_prompt_sets(cache: Path, spec: str, names: list[str], device: str = "auto",
                       custom: dict[str, list[str]] | None = None, prompt_file: Path | None = None,
                       file_set: str = "custom") -> list[tuple[str, int]]:
    """`affcli prompts`: encode named (or custom) prompt lists, and a prompt file as set `file_set`, with a
    backbone's text tower into the cache (written again where already cached); returns (set, prompts) written."""
    if prompt_file is not None:
        custom = {**(custom or {}), file_set: read_prompt_file(prompt_file)}
    lists = named_prompt_sets(n for n in names if not (custom and n in custom))
    lists.update(custom or {})
    b = build_backbone(spec, resolve_device(device))
    if not isinstance(b, TextEncoder):
        raise ValueError(f"{spec}: this backbone has no text encoder; prompts need a clip:* backbone")
    return [(n, k) for n, _, k in encode_prompts(FeatureStore(cache, mode="a"), [b], lists, skip_cached=False)]
