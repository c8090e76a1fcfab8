"""Inference-time variants of the point-cloud upsampler, judged on validation clouds (never the test set), and the
split of PU-GCN's Hausdorff into its two directions (stray points vs holes) for any folder of predictions.

Validation clouds (PU-GAN layout: input_2048 / gt_8192 / meshes): 24 procedural shapes of a seed the training data
never used (7) and the 14 training meshes, each a 2,048-point input (Poisson disk, seed 1) and an 8,192-point gt
(seed 0). Variants (x4): `base` (the pipeline as shipped, hole filling included), `nofill` (without the hole
filling of pointcloud/holefill.py), `fill:T,T2` (hole filling with FILL_TOL T and MODEL_TOL T2), `project` (outputs moved onto the Gaussian-weighted
average of their 8 nearest inputs' PCA tangent planes), `clamp:T` (only the part of that move beyond T x the
median input spacing), `sor:A` (merge candidates whose mean distance to their 8 nearest candidates exceeds mean + A
std dropped before the merge), `mean` (each child's copies averaged over the patches that hold it in their inner
70%), `steep:S` (the phong prior's steep-chord threshold), `inner:F` (share of each patch that gives candidates),
`keep:T` (the merge drops candidates whose keep-head logit is below T; `keep:off` drops none), `prior` (the same
network untrained: its prior through the pipeline), `nopin` (the model with copy 0 free to move).
`--noise L` adds seeded Gaussian noise (L x each cloud's radius) to the validation inputs.

    python bench/pc_inference_variants.py make-val --out /tmp/pc_val
    python bench/pc_inference_variants.py run --val /tmp/pc_val/proc /tmp/pc_val/mesh --out /tmp/pc_var \\
        --variants base project clamp:0.15 clamp:0.3 sor:1 mean steep:0.4 inner:0.5 inner:1.0 [--run MODEL]
    python bench/pc_inference_variants.py run --val /tmp/pc_val/proc /tmp/pc_val/mesh --out /tmp/pc_var \
        --variants prior base keep:off keep:0 keep:2 --run RUN [--noise 0.01]
    python bench/pc_inference_variants.py split --gt /work/shared/data/pointcloud/pugan_test/gt_8192 --pred DIR [DIR ..]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from scipy.spatial import cKDTree

import affcli.pointcloud.models.prior as prior_mod
import affcli.pointcloud.upsample as up
from affcli.pointcloud.data import list_meshes
from affcli.pointcloud.evaluate import score_folder
from affcli.pointcloud.io import read_cloud, read_mesh, write_cloud, write_mesh
from affcli.pointcloud.noise import add_noise
from affcli.pointcloud.models import model_from_spec, model_spec
from affcli.pointcloud.models.prior import pca_normals
from affcli.pointcloud.ops import knn
from affcli.pointcloud.procedural import procedural_shapes
from affcli.pointcloud.sampling import poisson_disk_sample

PC = Path(__file__).resolve().parents[2] / "shared" / "data" / "pointcloud"
BLOCKED = up.blocked_fps_merge  # the real merge, called by sor_merge while the pipeline's is patched


def make_val(out: Path) -> None:
    """out/proc (24 unseen procedural shapes) and out/mesh (the 14 training meshes), PU-GAN layout."""
    sets = {"proc": procedural_shapes(24, seed=7),
            "mesh": [(m.stem, *read_mesh(m)) for m in list_meshes(PC / "train_meshes")]}
    for name, shapes in sets.items():
        for sub in ("input_2048", "gt_8192", "meshes"):
            (out / name / sub).mkdir(parents=True, exist_ok=True)
        for stem, v, f in shapes:
            write_cloud(out / name / "gt_8192" / f"{stem}.xyz", poisson_disk_sample(v, f, 8192, seed=0))
            write_cloud(out / name / "input_2048" / f"{stem}.xyz", poisson_disk_sample(v, f, 2048, seed=1))
            write_mesh(out / name / "meshes" / f"{stem}.off", v, f)


def make_nonuniform(out: Path, ratio: float = 4.0) -> None:
    """out/nonuni: the 14 training meshes with inputs of two densities (Poisson disk, the half of each shape above a
    random plane through its centroid `ratio` times as dense as the other, 2,048 points in all), like PU-GAN's fandisk
    input; the same 8,192-point gt."""
    for sub in ("input_2048", "gt_8192", "meshes"):
        (out / "nonuni" / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for m in list_meshes(PC / "train_meshes"):
        v, f = read_mesh(m)
        axis = rng.normal(size=3)
        side = lambda x: (x - v.mean(0)) @ axis > 0  # noqa: E731
        dense = poisson_disk_sample(v, f, round(2 * 2048 * ratio / (ratio + 1)), seed=1)
        sparse = poisson_disk_sample(v, f, round(2 * 2048 / (ratio + 1)), seed=2)
        x = np.concatenate([dense[side(dense)], sparse[~side(sparse)]])
        write_cloud(out / "nonuni" / "input_2048" / f"{m.stem}.xyz", x)
        write_cloud(out / "nonuni" / "gt_8192" / f"{m.stem}.xyz", poisson_disk_sample(v, f, 8192, seed=0))
        write_mesh(out / "nonuni" / "meshes" / f"{m.stem}.off", v, f)


def tangent_projection(x: torch.Tensor, inp: torch.Tensor, clamp: float | None = None, k: int = 8) -> torch.Tensor:
    """x [M,3] moved onto the Gaussian-weighted mean of its k nearest inputs' tangent-plane projections (width: the
    nearest input's spacing); with `clamp`, only by the part of that move beyond clamp x the median input spacing."""
    normals = pca_normals(inp[None], knn(inp[None], inp[None], prior_mod.NORMAL_K)[1])[0]
    spacing = knn(inp[None], inp[None], 2)[0][0, :, 1].sqrt()
    d2, idx = (t[0] for t in knn(x[None], inp[None], k))
    w = torch.softmax(-d2 / spacing[idx[:, :1]].clamp_min(1e-9) ** 2, dim=1)
    n, p = normals[idx], inp[idx]
    move = (w[..., None] * -(n * ((x[:, None] - p) * n).sum(-1, keepdim=True))).sum(1)
    if clamp is not None:
        size = move.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        move = move * (1 - clamp * spacing.median() / size).clamp_min(0)
    return x + move


def sor_merge(alpha: float, xyz: torch.Tensor, cand: torch.Tensor, r: int) -> torch.Tensor:
    """The blocked merge after dropping candidates whose mean distance to their 8 nearest exceeds mean + alpha std
    (keeping at least r N)."""
    d = knn(cand[None], cand[None], 9)[0][0, :, 1:].sqrt().mean(-1)
    keep = d <= max(float(d.mean() + alpha * d.std()), float(d.sort().values[r * len(xyz) - 1]))
    return BLOCKED(xyz, cand[keep], r)


@torch.no_grad()
def mean_merge(model: torch.nn.Module, xyz: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """x r by averaging each child's copies over the patches that hold its point in their inner INNER share."""
    n, r = xyz.shape[0], model.ratio
    xyz_n, centre, radius = up.normalize_unit_sphere(xyz)
    size = min(up.PATCH, n)
    seeds = up.farthest_point_sample(xyz_n[None], max(1, math.ceil(n / size * up.SEED_FACTOR)))[0]
    idx, seeds = up._cover(xyz_n, up._patches(xyz_n, xyz_n[seeds], size), seeds, size)
    out = up._infer(model, xyz_n[idx], batch)[0].reshape(-1, r, 3)
    inner = (torch.arange(idx.shape[1]) < up.INNER * idx.shape[1]).repeat(idx.shape[0])
    inner[up._central(xyz_n, idx, seeds)] = True
    flat = idx.reshape(-1)[inner]
    acc = torch.zeros(n, r, 3).index_add_(0, flat, out[inner])
    count = torch.zeros(n).index_add_(0, flat, torch.ones(len(flat)))
    return (acc / count[:, None, None]).reshape(-1, 3) * radius + centre


def variant_fn(model: torch.nn.Module, name: str):
    """cloud [N,3] -> x4 cloud for one variant name (see the module docstring)."""
    kind, _, arg = name.partition(":")
    base = lambda x: up.upsample_pass(model, x)  # noqa: E731
    patches = {"sor": lambda: (up, "blocked_fps_merge", lambda *a: sor_merge(float(arg), *a)),  # built on use:
               "steep": lambda: (prior_mod, "STEEP", float(arg or 0)),  # keep:off has no number
               "inner": lambda: (up, "INNER", float(arg or 0)),
               "keep": lambda: (up, "KEEP_LOGIT", -float("inf") if arg == "off" else float(arg or 0))}
    if kind == "base":
        return base
    if kind == "nofill":
        return lambda x: up.upsample_pass(model, x, fill=False)
    if kind == "fill":
        import affcli.pointcloud.holefill as hf

        tol, model_tol = (float(v) for v in arg.split(","))

        def filled(x: torch.Tensor) -> torch.Tensor:
            with mock.patch.object(hf, "FILL_TOL", tol), mock.patch.object(hf, "MODEL_TOL", model_tol):
                return base(x)
        return filled
    if kind == "prior":
        untrained = model_from_spec(model_spec(model)).eval()
        return lambda x: up.upsample_pass(untrained, x)
    if kind == "nopin":
        spec = model_spec(model)
        free = model_from_spec(spec | {"config": spec["config"] | {"pin_input": False}}).eval()
        free.load_state_dict(model.state_dict())
        return lambda x: up.upsample_pass(free, x)
    if kind in ("project", "clamp"):
        return lambda x: tangent_projection(base(x), x, float(arg) if kind == "clamp" else None)
    if kind == "mean":
        return lambda x: mean_merge(model, x)
    if kind in patches:
        patch = patches[kind]()

        def fn(x: torch.Tensor) -> torch.Tensor:
            with mock.patch.object(*patch):
                return base(x)
        return fn
    raise SystemExit(f"unknown variant {name!r}")


def run(a: argparse.Namespace) -> None:
    """Each variant over each validation folder: outputs cached in OUT/<set>/<variant>, means in OUT/variants.json."""
    torch.set_num_threads(a.threads)
    model = up.load_upsampler(a.run)
    path = a.out / "variants.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    for val in a.val:
        for name in a.variants:
            tag = name.replace(":", "_") + (f"_noise{a.noise:g}" if a.noise else "")
            pred = a.out / val.name / tag
            pred.mkdir(parents=True, exist_ok=True)
            fn = variant_fn(model, name)
            for f in sorted((val / "input_2048").glob("*.xyz")):
                if not (pred / f.name).is_file():
                    x = add_noise(read_cloud(f), a.noise, f.stem) if a.noise else read_cloud(f)
                    write_cloud(pred / f.name, fn(torch.as_tensor(x).float()).numpy())
            mean = score_folder(pred, val / "gt_8192", val / "meshes", "pugcn", torch.device("cpu"))[-1]
            res[f"{val.name}/{tag}"] = {k: mean[k] for k in ("cd", "hd", "p2f_mean", "cd_gt", "hd_gt")}
            res[f"{val.name}/{tag}"] |= hd_split(pred, val / "gt_8192")
            path.write_text(json.dumps(res, indent=1))
            print(val.name, tag, json.dumps({k: round(v, 4) for k, v in res[f"{val.name}/{tag}"].items()}), flush=True)


def _own_frame(x: np.ndarray) -> np.ndarray:
    c = x.mean(0)
    return (x - c) / np.linalg.norm(x - c, axis=1).max()


def hd_split(pred_dir: Path, gt_dir: Path) -> dict[str, float]:
    """Means over shapes (x1e-3, own frame) of max squared pred->gt (stray points) and max gt->pred (holes): their
    sum is PU-GCN's Hausdorff."""
    fwd, bwd = [], []
    for g in sorted(gt_dir.glob("*.xyz")):
        gt, pred = _own_frame(read_cloud(g)), _own_frame(read_cloud(pred_dir / g.name))
        fwd.append(cKDTree(gt).query(pred)[0].max() ** 2)
        bwd.append(cKDTree(pred).query(gt)[0].max() ** 2)
    return {"hd_pred_to_gt": float(np.mean(fwd)) * 1e3, "hd_gt_to_pred": float(np.mean(bwd)) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mv = sub.add_parser("make-val")
    mv.add_argument("--out", type=Path, required=True)
    mv.add_argument("--nonuniform", action="store_true", help="Only the two-density set OUT/nonuni (make_nonuniform).")
    rv = sub.add_parser("run")
    rv.add_argument("--val", type=Path, nargs="+", required=True)
    rv.add_argument("--out", type=Path, required=True)
    rv.add_argument("--variants", nargs="+", default=["base"])
    rv.add_argument("--run", type=Path, default=None, help="Run folder or .safetensors (default: the shipped model).")
    rv.add_argument("--threads", type=int, default=1)
    rv.add_argument("--noise", type=float, default=0.0, help="Input noise (x each cloud's radius, seeded).")
    sp = sub.add_parser("split")
    sp.add_argument("--gt", type=Path, required=True)
    sp.add_argument("--pred", type=Path, nargs="+", required=True)
    a = ap.parse_args()
    if a.cmd == "make-val":
        make_nonuniform(a.out) if a.nonuniform else make_val(a.out)
    elif a.cmd == "run":
        run(a)
    else:
        for d in a.pred:
            print(d, json.dumps({k: round(v, 3) for k, v in hd_split(d, a.gt).items()}))


if __name__ == "__main__":
    main()
