"""Options of the `affcli pc` commands besides `train` (whose options are `config.TrainConfig`), as dataclasses the
CLI turns into flags; torch-free, so `affcli pc --help` stays fast. Their bodies are in `pointcloud.commands`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from affcli.common.cli_options import option

WEIGHTS_HELP = ("Shipped weights when --run is not given: clean (trained on clean inputs) or noise (trained with "
                "input jitter; better on scans with noise of about 1-2% of the cloud's radius, worse on clean ones: "
                "docs/pointcloud_models.md).")
FILL_HELP = ("Hole filling: after the merge, points off the surface leave and Delaunay edge midpoints and triangle "
             "centroids that reach into the input's gaps join, then one more farthest-point merge (whole passes of "
             "up to 16,384 input points; --no-fill: the network's children only).")
CONVENTION_HELP = "pugcn | textbook | half"


@dataclass
class MakeDataOptions:
    """`affcli pc make-data`."""

    out: Path = option(help="HDF5 file to write.")
    meshes: list[Path] = option([], help="Folder of .off/.obj/.ply meshes (repeatable).", shown="none")
    procedural: int = option(0, help="Also N generated shapes (superquadrics, tori, CSG, ...).")
    patches_per_mesh: int = option(200, help="Patches cut from each shape.")
    seed: int = option(0, help="Seed.")
    exclude_near: Path | None = option(None, help="Folder of test clouds: leave out any shape that the leak check "
                                                  "would match to one of them.")


@dataclass
class MakeTestOptions:
    """`affcli pc make-test`."""

    meshes: Path = option(help="Folder of meshes.")
    out: Path = option(help="Test folder (input_<n-in>/, gt_<n-gt>/).")
    n_in: int = option(2048, help="Input points per shape.")
    n_gt: int = option(8192, help="Ground-truth points per shape.")
    seed: int = option(0, help="Seed.")


@dataclass
class UpsampleOptions:
    """`affcli pc upsample` (besides the optional CLOUD argument)."""

    input: Path | None = option(None, help="Cloud: .xyz, .ply, .npy or KITTI .bin (or the CLOUD argument).")
    run: Path | None = option(None, help="Run folder (or model.safetensors); default: the shipped x4 PU-MFA "
                                         "(docs/pointcloud_models.md).")
    weights: str = option("clean", help=WEIGHTS_HELP)
    ratio: str = option("4", help="Any number > 1: exactly round(ratio x N) points. Powers of 4 are whole x4 passes "
                                  "(16: two); others (2.5, 5, 6) the passes that reach them, the last thinned by "
                                  "farthest-point sampling.")
    out: Path | None = option(None, help="Output cloud (.xyz, .ply, .npy).", shown="<input stem>_x<ratio>.xyz beside "
                                                                                  "the input")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1 ...")
    batch: int | None = option(None, help="Patches per forward pass.", shown="by device")
    merge: str = option("auto", help="auto (inner up to 2^20 points, else assign) | inner (blocked over "
                                     "patch-interior children) | blocked (FPS inside spatial blocks) | fps (one global "
                                     "FPS: slow) | assign.")
    render: bool = option(False, help="Also write a before/after PNG beside --out.")
    fill: bool | None = option(None, help=FILL_HELP, shown="on; off with --weights noise")
    max_memory: float = option(2048, help="MiB of working memory; larger clouds go in chunks.")
    threads: int | None = option(None, help="CPU threads.", shown="what this process may use: affinity, cgroup "
                                                                 "quota, idle CPUs, OMP_NUM_THREADS")


@dataclass
class EvalOptions:
    """`affcli pc eval`."""

    test_dir: Path = option(help="Folder with input_2048/, gt_8192/ (and meshes/).")
    run: Path | None = option(None, help="Run folder.", shown="the shipped x4 PU-MFA")
    weights: str = option("clean", help=WEIGHTS_HELP)
    mesh_dir: Path | None = option(None, help="Meshes for P2F.", shown="TEST_DIR/meshes")
    convention: str = option("pugcn", help=CONVENTION_HELP)
    ratio: str = option("4", help="Any number > 1; the test folder needs gt_<round(ratio x N)>/.")
    noise: str | None = option(None, help="Input noise levels, e.g. 0.01,0.02: each level adds seeded Gaussian noise "
                                          "of sigma = level x the cloud's radius to every input (all methods see the "
                                          "same), scored against the clean ground truth; one folder and table per "
                                          "level (0 = clean).", shown="clean inputs only")
    noise_seed: int = option(0, help="Seed of the input noise.")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1 ...")
    renders: int = option(3, help="Before/after PNGs of the N worst and N best shapes (those with meshes first).")
    allow_overlap: bool = option(False, help="Evaluate even if the training data holds test shapes (reported).")
    fill: bool | None = option(None, help=FILL_HELP, shown="on; off with --weights noise")
    out: Path | None = option(None, help="Output folder.", shown="RUN/eval_x<r>_<convention>, or "
                                                               "./eval_pu_mfa_x4/... for the shipped model")


@dataclass
class MetricsOptions:
    """`affcli pc metrics`."""

    pred: Path = option(help="Predicted cloud.")
    gt: Path = option(help="Ground-truth cloud.")
    mesh: Path | None = option(None, help="Ground-truth mesh for P2F.")
    convention: str = option("pugcn", help=CONVENTION_HELP)
    device: str = option("auto", help="auto, cpu, cuda, cuda:1 ...")
