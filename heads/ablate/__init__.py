"""Ablation grids over cached features: expand and validate a grid, run it (pool or Dask), tabulate mean ± std."""
from affcli.heads.ablate.demo import demo_ablation
from affcli.heads.ablate.execute import run_grid
from affcli.heads.ablate.run import GridResult, Outcome, run_one
from affcli.heads.ablate.grid import Grid, GridError, RunSpec, expand, grid_from_dict, load_grid
from affcli.heads.ablate.report import Table, build_report, collect, summarise
from affcli.heads.ablate.validate import build_runs, grid_meta

__all__ = ["Grid", "GridError", "GridResult", "Outcome", "RunSpec", "Table", "build_report", "build_runs",
           "collect", "demo_ablation", "expand", "grid_from_dict", "grid_meta", "load_grid", "run_grid",
           "run_one", "summarise"]
