"""The feature cache: Zarr v3 store layout, fingerprints, manifest, loaders, verification, HDF5 interchange."""
from cache.errors import CacheError, FingerprintMismatch
from cache.loader import as_dask, load_table
from cache.store import FeatureStore
from cache.table import FeatureTable

__all__ = ["CacheError", "FingerprintMismatch", "FeatureStore", "FeatureTable", "as_dask", "load_table"]
