"""The 12 PU-Net MC_5k test clouds: 1,250 input points by farthest-point sampling of each 5,000-point cloud,
upsampled x4 and scored against the 5,000 (CD / HD x1e-3, PU-GCN convention, each cloud in its own frame; there are
no meshes, so no P2F). Beside them: CD with both clouds in the gt's frame (its centroid and radius), and how far the
input's centroid lies from the gt's (in gt radii): the 5,000 points are not spread like the surface, so their
centroid differs from that of any evenly spread sample of the same surface, and the own-frame scores move with it. Methods: `model` (the shipped x4 PU-MFA or --run), `prior` (the same network untrained),
`midpoint` (kNN midpoints + FPS) and `input`. Writes OUT/results.json and OUT/results.md (per cloud, means, and on
how many clouds the model beats midpoints).

    python bench/pc_punet_mc5k.py --out /tmp/pc_mc5k [--run RUN] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from affcli.common.threads import configure_threads
from affcli.pointcloud.baselines import midpoint_upsample
from affcli.pointcloud.evaluate import score_folder
from affcli.pointcloud.io import read_cloud, write_cloud
from affcli.pointcloud.leak import overlap_report
from affcli.pointcloud.models import model_from_spec, model_spec
from affcli.pointcloud.ops import farthest_point_sample
from affcli.pointcloud.upsample import DEFAULT_MODEL, load_upsampler, upsample_cloud

PC = Path(__file__).resolve().parents[2] / "shared" / "data" / "pointcloud"
N_IN = 1250


def make_inputs(src: Path, out: Path) -> tuple[Path, Path]:
    """OUT/input_1250 (FPS from the first point) and OUT/gt_5000 (xyz of the clouds, normals dropped)."""
    ins, gts = out / f"input_{N_IN}", out / "gt_5000"
    for f in sorted(src.glob("*.xyz")):
        full = read_cloud(f)
        write_cloud(gts / f.name, full)
        idx = farthest_point_sample(torch.as_tensor(full)[None], N_IN)[0].numpy()
        write_cloud(ins / f.name, full[idx])
    return ins, gts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", type=Path, default=None, help="Run folder or .safetensors (default: the shipped model).")
    ap.add_argument("--data", type=Path, default=PC / "punet_mc5k")
    ap.add_argument("--methods", nargs="+", default=["model", "prior", "midpoint", "input"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-fill", dest="fill", action="store_false",
                    help="Model and prior without the hole-filling candidates (pointcloud/holefill.py).")
    a = ap.parse_args()
    threads = configure_threads(a.threads)
    ins, gts = make_inputs(a.data, a.out)
    model = load_upsampler(a.run)
    untrained = model_from_spec(model_spec(model)).eval()
    fns = {"model": lambda x: upsample_cloud(model, x, 4, fill=a.fill),
           "prior": lambda x: upsample_cloud(untrained, x, 4, fill=a.fill),
           "midpoint": lambda x: midpoint_upsample(x, 4).numpy(), "input": lambda x: x}
    files = sorted(ins.glob("*.xyz"))
    res = {"threads": threads, "run": str(a.run or DEFAULT_MODEL), "fill": a.fill, "methods": {},
           "leak": overlap_report(a.run or DEFAULT_MODEL, files, gts, None),
           "input_centroid_offset": {f.stem: centroid_offset(read_cloud(f), read_cloud(gts / f.name)) for f in files}}
    for m in a.methods:
        for f in files:
            if not (a.out / m / f.name).is_file():
                write_cloud(a.out / m / f.name, np.asarray(fns[m](read_cloud(f))))
        res["methods"][m] = score_folder(a.out / m, gts, None, "pugcn", torch.device("cpu"))
        mean = res["methods"][m][-1]
        print(f"{m}: CD {mean['cd']:.4f} HD {mean['hd']:.3f}", flush=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (a.out / "results.md").write_text(markdown(res) + "\n")
    print(markdown(res))


def centroid_offset(x: np.ndarray, gt: np.ndarray) -> float:
    """Distance between the centroids of x and gt in units of gt's radius (PU-GCN's own-frame normalisation)."""
    c = gt.mean(0)
    return float(np.linalg.norm(x.mean(0) - c) / np.linalg.norm(gt - c, axis=1).max())


def markdown(res: dict) -> str:
    """Per cloud CD and HD of every method (x1e-3), the means, and the model's wins over midpoints."""
    methods = list(res["methods"])
    per = {m: {r["shape"]: r for r in rows} for m, rows in res["methods"].items()}
    offset = res.get("input_centroid_offset") or {}
    cols = [("cd", "CD {}", ".4f"), ("hd", "HD {}", ".3f"), ("cd_gt", "CD gt frame {}", ".4f")]
    heads = [head.format(m) for _, head, _ in cols for m in methods] + (["input centroid offset"] if offset else [])
    lines = ["| cloud | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for shape in per[methods[0]]:
        cells = [format(per[m][shape][key], fmt) for key, _, fmt in cols for m in methods]
        if offset:
            cells.append(f"{sum(offset.values()) / len(offset):.4f}" if shape == "mean" else f"{offset[shape]:.4f}")
        lines.append(f"| {'**mean**' if shape == 'mean' else shape} | " + " | ".join(cells) + " |")
    if {"model", "midpoint"} <= set(methods):
        shapes = [s for s in per["model"] if s != "mean"]
        for key, name in (("cd", "CD"), ("hd", "HD"), ("cd_gt", "CD in the gt's frame")):
            wins = sum(per["model"][s][key] < per["midpoint"][s][key] for s in shapes)
            lines.append(f"\nmodel beats midpoints on {name}: {wins}/{len(shapes)} clouds")
    leak = res.get("leak") or {}
    if leak.get("checked"):
        lines.append(f"\nleak check: {len(leak['overlap'])} of these clouds in the training data")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
