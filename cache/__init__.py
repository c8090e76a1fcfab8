"""The feature cache: Zarr v3 store layout, fingerprints, manifest, loaders, verification, HDF5 interchange.

The public names load on first use (PEP 562), so the torch-free `cache.options` (the CLI's option tables) can be
imported without the store's dependencies."""
from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {"LeaseBusy": "coord", "CacheError": "errors", "DoneElsewhere": "errors", "FingerprintMismatch": "errors",
           "as_dask": "loader", "load_table": "loader", "FeatureStore": "store", "FeatureTable": "table"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'affcli.cache' has no attribute {name!r}")
    return getattr(import_module(f"affcli.cache.{_PUBLIC[name]}"), name)
