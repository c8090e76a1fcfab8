"""`pc metrics` of large clouds runs in bounded time and memory (KD-tree nearest neighbours, one pass per frame)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from affcli.pointcloud import metrics

SCRIPT = r"""
import json, resource, sys, time
import numpy as np
from affcli.pointcloud.metrics import evaluate_clouds
rng = np.random.default_rng(0)
n = int(sys.argv[1])
p, g = rng.random((n, 3)).astype(np.float32), rng.random((n, 3)).astype(np.float32)
evaluate_clouds(p[:1000], g[:1000], device="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
res = evaluate_clouds(p, g, device="cpu")
print(json.dumps({"s": time.perf_counter() - t, "grew_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                  "cd": res["cd"], "n": res["n_pred"]}))
"""


def test_200k_points_in_bounded_time_and_memory():
    n = 200_000
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(n)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n"] == n and 0 < out["cd"] < 1e-3
    assert out["s"] < 120, out
    assert out["grew_mib"] < 200, out  # the clouds are 2.4 MB each; brute-force blocks or an N x M matrix would not fit


def test_tree_and_blocks_agree():
    rng = np.random.default_rng(3)
    p = torch.as_tensor(rng.random((1, 700, 3)), dtype=torch.float32)
    g = torch.as_tensor(rng.random((1, 900, 3)), dtype=torch.float32)
    for a, b in zip(metrics._nn_sq(p, g), metrics._nn_sq_tree(p, g)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert metrics.use_tree(10_000, 10_000, torch.device("cpu")) and not metrics.use_tree(8192, 8192, torch.device("cpu"))
