"""Prompt lists -> text embeddings in the cache, by every backbone with a text tower (`TextEncoder`, e.g. clip:*):
the one loop `extract` runs after its videos or images and `affcli prompts` runs on demand."""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from affcli.cache.errors import CacheError
from affcli.cache.store import FeatureStore, safe_key
from affcli.common.device import resolve_device
from affcli.common.names import safe_name
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


def _replaced(store: FeatureStore, spec: str, lists: dict[str, list[str]]) -> list[str]:
    """The sets of `lists` whose cached prompts by `spec` differ from the ones about to be written (a different list,
    or one whose embeddings cannot be read), and the names whose stored key another cached set already takes."""
    have = store.text_sets()
    out = []
    for name, prompts in lists.items():
        key = safe_key(f"{name}@{spec}")
        clash = [n for n, s in have if s == spec and n != name and safe_key(f"{n}@{s}") == key]
        if clash:
            raise ValueError(f"prompt set name {name!r} would be stored under the key of the cached set {clash[0]!r}; "
                             f"pick another name")
        if (name, spec) in have:
            try:
                old = store.read_text_embeddings(name, spec)[0]
            except (CacheError, KeyError, ValueError, OSError):
                old = None
            if old != list(prompts):
                out.append(name)
    return out


def encode_prompt_sets(cache: Path, spec: str, names: list[str], device: str = "auto",
                       custom: dict[str, list[str]] | None = None, prompt_file: Path | None = None,
                       file_set: str = "custom", overwrite: bool = False, defaults: bool = False
                       ) -> list[tuple[str, int]]:
    """`affcli prompts`: encode named (or custom) prompt lists, and a prompt file as set `file_set`, with a
    backbone's text tower into the cache; returns (set, prompts) written. A set cached with the same prompts is
    written again; a custom list under a built-in set's name, or any list that differs from the cached set of its
    name, is refused (before anything is built or written) unless `overwrite`. With `defaults` (the named sets are
    the default ones, not asked for), a named set cached with other prompts is left as it is, with a warning, even
    with `overwrite` (which then applies to the file's set)."""
    if prompt_file is not None:
        custom = {**(custom or {}), file_set: read_prompt_file(prompt_file)}
    for name in custom or {}:
        safe_name(name, "prompt set name")
    shadow = sorted(n for n, prompts in (custom or {}).items() if n in PROMPT_SETS and prompts != PROMPT_SETS[n])
    if shadow and not overwrite:
        raise ValueError(f"prompt set {shadow[0]!r} is built in; a custom list under its name would replace it. Pick "
                         f"another --name, or give --overwrite to replace it in {cache}")
    lists = named_prompt_sets(n for n in names if not (custom and n in custom))
    lists.update(custom or {})
    try:
        cached = FeatureStore(cache, mode="r")
    except CacheError:
        cached = None  # nothing cached yet (or not a cache: opening it for writing below says so)
    if cached is not None:
        changed = _replaced(cached, spec, lists)
        if defaults:
            for name in [n for n in changed if n not in (custom or {})]:
                warnings.warn(f"{cache}: prompt set {name!r} is cached for {spec} with other prompts: left as it is "
                              f"(--set {name} --overwrite replaces it)", stacklevel=2)
                lists.pop(name)
            changed = [n for n in changed if n in lists]
        if changed and not overwrite:
            raise ValueError(f"{cache}: prompt set {changed[0]!r} is cached for {spec} with other prompts; give "
                             f"--overwrite to replace it")
    b = build_backbone(spec, resolve_device(device))
    if not isinstance(b, TextEncoder):
        raise ValueError(f"{spec}: this backbone has no text encoder; prompts need a clip:* backbone")
    store = FeatureStore(cache, mode="a")
    return [(n, k) for n, _, k in encode_prompts(store, [b], lists, skip_cached=False)]
