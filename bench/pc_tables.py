"""Tables of `bench/eval_default_pc.py` results: join the results of one setting computed in several OUT folders
(disjoint methods, e.g. the baselines in one job and the model in another) and print per-shape CD / HD / P2F of every
method with the model's wins over kNN midpoints.

    python bench/pc_tables.py join --key x4 --out /tmp/pc_x4 --from /tmp/ev_model /tmp/ev_baselines
    python bench/pc_tables.py per-shape /tmp/pc_x4/results_x4.json
    python bench/pc_tables.py check --record bench/results/pc_default_v3_x16.json --pred OUT/x16/model --gt OUT/gt_32768

`check` re-scores (CD/HD, no P2F) the first --first predictions of a folder and compares them with a recorded
results JSON of the same method: whether today's pipeline still gives the recorded figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = ("model", "prior", "midpoint", "input", "oracle")
COLS = (("cd", "CD"), ("hd", "HD"), ("p2f_mean", "P2F"))


def join(key: str, out: Path, sources: list[Path]) -> Path:
    """OUT/results_<key>.json holding every method of the sources' results_<key>.json (a method twice is an error)."""
    res: dict | None = None
    for src in sources:
        r = json.loads((src / f"results_{key}.json").read_text())
        if res is None:
            res = r
            continue
        if set(r["methods"]) & set(res["methods"]):
            raise SystemExit(f"{src}: methods {sorted(set(r['methods']) & set(res['methods']))} already joined")
        if float(r["ratio"]) != float(res["ratio"]) or float(r.get("noise", 0)) != float(res.get("noise", 0)):
            raise SystemExit(f"{src}: another setting than {key}")
        res["methods"].update(r["methods"])
        res["leak"] = res["leak"] or r["leak"]
    assert res is not None
    rank = {m: i for i, m in enumerate(ORDER)}
    res["methods"] = {m: res["methods"][m] for m in sorted(res["methods"], key=lambda m: rank.get(m, 9))}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"results_{key}.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    return path


def _fmt(v: float | None, col: str) -> str:
    return "-" if v is None else f"{v:.4f}" if col == "cd" else f"{v:.3f}"


def per_shape(path: Path) -> str:
    """Markdown: one row per shape (and the mean) with CD, HD, P2F of every method, then the model's wins."""
    res = json.loads(path.read_text())
    ms = [m for m in res["methods"] if m != "oracle"]
    per = {m: {r["shape"]: r for r in res["methods"][m]["rows"]} for m in ms}
    lines = ["| shape | " + " | ".join(f"{n} {m}" for c, n in COLS for m in ms) + " |",
             "|---|" + "---:|" * (3 * len(ms))]
    wins = {c: [0, 0] for c, _ in COLS}
    for shape in per[ms[0]]:
        name = "**mean**" if shape == "mean" else shape
        lines.append(f"| {name} | " + " | ".join(_fmt(per[m][shape].get(c), c) for c, _ in COLS for m in ms) + " |")
        if shape == "mean" or not {"model", "midpoint"} <= set(ms):
            continue
        for c, _ in COLS:
            a, b = per["model"][shape].get(c), per["midpoint"][shape].get(c)
            if a is not None and b is not None:
                wins[c][0] += a < b
                wins[c][1] += 1
    if {"model", "midpoint"} <= set(ms):
        lines += ["", "Shapes where the model beats midpoints: "
                  + ", ".join(f"{n} {wins[c][0]}/{wins[c][1]}" for c, n in COLS)]
    return "\n".join(lines)


def check(record: Path, pred: Path, gt: Path, first: int, method: str = "model") -> float:
    """Largest relative CD/HD difference between fresh scores of pred/*.xyz (first n) and the recorded rows."""
    import torch

    from affcli.pointcloud.evaluate import evaluate_clouds
    from affcli.pointcloud.io import read_cloud

    rec = {r["shape"]: r for r in json.loads(record.read_text())["methods"][method]["rows"]}
    worst = 0.0
    for f in sorted(pred.glob("*.xyz"))[:first]:
        r = evaluate_clouds(read_cloud(f), read_cloud(gt / f.name), None, "pugcn", torch.device("cpu"))
        cd, hd, old = r["cd"] * 1e3, r["hd"] * 1e3, rec[f.stem]
        worst = max(worst, abs(cd - old["cd"]) / old["cd"], abs(hd - old["hd"]) / old["hd"])
        print(f"{f.stem}: CD {cd:.4f} HD {hd:.3f} | recorded CD {old['cd']:.4f} HD {old['hd']:.3f}", flush=True)
    print(f"largest relative difference: {worst:.2e}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    jp = sub.add_parser("join")
    jp.add_argument("--key", required=True, help="Setting: x4, x2.5, x4_noise0.01 ...")
    jp.add_argument("--out", type=Path, required=True)
    jp.add_argument("--from", dest="sources", type=Path, nargs="+", required=True)
    pp = sub.add_parser("per-shape")
    pp.add_argument("results", type=Path)
    cp = sub.add_parser("check")
    cp.add_argument("--record", type=Path, required=True)
    cp.add_argument("--pred", type=Path, required=True)
    cp.add_argument("--gt", type=Path, required=True)
    cp.add_argument("--first", type=int, default=4)
    cp.add_argument("--method", default="model")
    a = ap.parse_args()
    if a.cmd == "check":
        check(a.record, a.pred, a.gt, a.first, a.method)
    elif a.cmd == "join":
        print(join(a.key, a.out, a.sources))
    else:
        print(per_shape(a.results))


if __name__ == "__main__":
    main()
