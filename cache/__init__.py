"""The feature cache: Zarr v3 store layout, fingerprints, manifest, loaders, verification, HDF5 interchange."""
from affcli.cache.coord import LeaseBusy
from affcli.cache.errors import CacheError, DoneElsewhere, FingerprintMismatch
from affcli.cache.loader import as_dask, load_table
from affcli.cache.store import FeatureStore
from affcli.cache.table import FeatureTable

__all__ = ["CacheError", "DoneElsewhere", "FingerprintMismatch", "LeaseBusy", "FeatureStore", "FeatureTable", "as_dask", "load_table"]
