"""Errors of the feature cache; each message names the store (and video / feature set) at fault."""


class CacheError(Exception):
    """A cache that cannot be read or written as asked."""


class FingerprintMismatch(CacheError):
    """An existing feature set was made by another backbone / preprocessing than the one asked for."""


class BadVideo(CacheError):
    """One video of a feature set that cannot be trusted (checksum mismatch, missing array, data that disagrees
    with its fingerprint); names the store, the set and the video, so `--skip-bad` can leave it out."""

    def __init__(self, path: str, spec: str, video: str, problem: str):
        self.path, self.spec, self.video, self.problem = str(path), spec, video, " ".join(str(problem).split())
        super().__init__(f"{self.path}: feature set {spec!r}, video {video!r}: {self.problem}")


class AllVideosBad(CacheError):
    """Every requested video failed its checks under `--skip-bad`, so nothing is left to load."""


class DoneElsewhere(CacheError):
    """Another writer completed this video first (first writer wins): not a failure, nothing was overwritten."""
