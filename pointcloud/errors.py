"""The one error type of the point-cloud path, with one-line messages naming the file and the problem."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

READ_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError, UnicodeDecodeError,
               MemoryError, OverflowError)
"""What third-party readers (h5py, numpy, json, safetensors) raise on damaged bytes."""


class PointCloudError(Exception):
    """Bad point-cloud or mesh input: empty cloud, NaNs, a mesh without faces, a wrong shape."""


def check_xyz_shape(xyz, name: str = "points", batched: bool = True) -> None:
    """Raise PointCloudError unless `xyz` is [B,N,3] (or [N,3] when not batched) with N > 0."""
    want = 3 if batched else 2
    if xyz.ndim != want or xyz.shape[-1] != 3:
        shape = "[B,N,3]" if batched else "[N,3]"
        raise PointCloudError(f"{name}: expected shape {shape}, got {list(xyz.shape)}")
    if xyz.shape[-2] == 0:
        raise PointCloudError(f"{name}: empty point cloud")


@contextlib.contextmanager
def reading(path, what: str) -> Iterator[None]:
    """A damaged file read inside the block (h5py, numpy, json errors) as one PointCloudError naming it and `what` it
    should be."""
    try:
        yield
    except PointCloudError:
        raise
    except READ_ERRORS as e:
        detail = " ".join(str(e).split())[:160] or type(e).__name__
        raise PointCloudError(f"{path}: unreadable {what} ({detail})") from None
