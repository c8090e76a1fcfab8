"""Errors of the feature cache; each message names the store (and video / feature set) at fault."""


class CacheError(Exception):
    """A cache that cannot be read or written as asked."""


class FingerprintMismatch(CacheError):
    """An existing feature set was made by another backbone / preprocessing than the one asked for."""
