"""What hole filling (pointcloud/holefill.py) costs: seconds and peak RSS of one x4 `upsample_pass` of the shipped
model over a unit sphere of N points, with and without fill, each in its own process (a clean peak per run).

    python bench/pc_fill_cost.py --points 2048 8192 16384 --threads 1 [--json bench/results/pc_fill_cost.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ONE = """
import json, resource, sys, time, torch
from affcli.pointcloud.upsample import load_upsampler, upsample_pass
torch.set_num_threads(int(sys.argv[3]))
n, fill = int(sys.argv[1]), sys.argv[2] == "1"
x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
x = x / x.norm(dim=1, keepdim=True)
model = load_upsampler(None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
out = upsample_pass(model, x, 4, fill=fill)
print(json.dumps({"points": n, "fill": fill, "output_points": len(out), "seconds": round(time.perf_counter() - t, 2),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "rss_before_pass_mib": round(before)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rows = []
    for n in a.points:
        for fill in (0, 1):
            res = subprocess.run([sys.executable, "-c", ONE, str(n), str(fill), str(a.threads)], capture_output=True,
                                 text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print("| points | fill | seconds | peak RSS MiB |\n|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['points']:,} | {'on' if r['fill'] else 'off'} | {r['seconds']} | {r['peak_rss_mib']} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
