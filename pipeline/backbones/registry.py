"""The backbone kind table: one `@BACKBONES.register("kind")` per backbone module."""
from __future__ import annotations

from affcli.common.registry import Registry

BACKBONES: Registry = Registry("backbone")
