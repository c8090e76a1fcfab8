"""The one error type of the point-cloud path, with one-line messages naming the file and the problem."""

from __future__ import annotations


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
