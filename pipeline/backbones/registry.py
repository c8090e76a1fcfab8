"""The backbone kind table: one `@BACKBONES.register("kind")` per backbone module.

Every backbone class is called as `cls(spec, device, seed, **options)`; its options are its further keyword
parameters (e.g. fer's `weights`), checked by `BACKBONES.check` like any other registered part. Declared at
registration for `--backbone`'s help (read from source, no import): `modality` (the one its base class fixes) and
an `example` spec.
"""
from __future__ import annotations

from affcli.common.registry import Registry

BACKBONES: Registry = Registry("backbone", supplied=("spec", "device", "seed"))
