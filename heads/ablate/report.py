"""Ablation tables from finished runs: mean ± sample std over seeds, best per column marked; markdown, CSV, LaTeX, PNG."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from affcli.common.runs import read_json

GRID_FILE = "grid.json"
RUN_FILE = "ablate.json"
PRUNED_FILE = "pruned.json"
SEED_AXIS = "seed"
STD_NOTE = "mean ± sample std (ddof=1) over seeds"
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "err")
NOT_METRICS = frozenset({"epoch", "best_epoch", "epochs", "step", "steps", "seconds", "time", "n_params",
                         "n_train", "n_val", "train_seconds"})


@dataclass
class Table:
    """One task's ablation table: per-setting summary plus its renderings."""

    task: str
    axes: list[str]
    metrics: list[str]
    summary: pl.DataFrame
    markdown: str
    latex: str
    files: dict[str, Path]


def run_status(run_dir: Path, want_hash: str | None = None) -> str:
    """'ok' (metrics.json of this config), 'failed' (error.json of this config), 'pruned' (stopped early by a search)
    or 'pending'."""
    meta_path = run_dir / RUN_FILE
    if not meta_path.exists():
        return "pending"
    meta = read_json(meta_path)
    if want_hash is not None and meta.get("hash") != want_hash:
        return "pending"
    if meta.get("finished") and (run_dir / "metrics.json").exists():
        return "ok"
    if (run_dir / "error.json").exists():
        return "failed"
    if (run_dir / PRUNED_FILE).exists():
        return "pruned"
    return "pending"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif (isinstance(v, (int, float)) and not isinstance(v, bool) and key not in NOT_METRICS
              and not k.startswith("n_")):
            out[key] = float(v)
    return out


def table_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers a table shows: 'main' plus the trainer's best validation metrics ('val'), else all numbers."""
    if isinstance(metrics.get("val"), dict):
        val = {k: v for k, v in metrics["val"].items() if not isinstance(v, dict)}
        return {"main": float(metrics["main"]), **_flatten(val)}
    return _flatten(metrics)


def collect(out_dir: str | Path) -> pl.DataFrame:
    """One row per run of the grid in `out_dir`: name, hash, status, axis values, task, flattened metrics."""
    out_dir = Path(out_dir)
    grid = read_json(out_dir / GRID_FILE) if (out_dir / GRID_FILE).exists() else None
    if grid is not None:
        entries = [(r["name"], r["hash"], r["axes"], r.get("task", "")) for r in grid["runs"]]
    else:
        entries = []
        for p in sorted((out_dir / "runs").glob(f"*/{RUN_FILE}")):
            m = read_json(p)
            entries.append((m["name"], m["hash"], m["axes"], m.get("task", "")))
    rows = []
    for name, h, axes, task in entries:
        rd = out_dir / "runs" / name
        status = run_status(rd, h)
        row: dict[str, Any] = {"name": name, "hash": h, "status": status, "task": task,
                               **{k: str(v) for k, v in axes.items()}}
        if status == "ok":
            row.update(table_metrics(read_json(rd / "metrics.json")))
        elif status == "failed":
            err = read_json(rd / "error.json")
            row["error"] = f"{err.get('type', 'Error')}: {err.get('message', '')}".splitlines()[0]
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def grid_axes(out_dir: str | Path, runs: pl.DataFrame) -> list[str]:
    """Axis names in grid order (from grid.json, else inferred from the run records)."""
    p = Path(out_dir) / GRID_FILE
    if p.exists():
        return list(read_json(p)["axes"])
    fixed = {"name", "hash", "status", "task", "error"}
    return [c for c in runs.columns if c not in fixed and runs.schema[c] == pl.String]


def metric_columns(runs: pl.DataFrame, axes: list[str]) -> list[str]:
    """Numeric metric columns, 'main' first."""
    skip = set(axes) | {"name", "hash", "status", "task", "error"}
    cols = [c for c in runs.columns if c not in skip and runs.schema[c].is_numeric()]
    return sorted(cols, key=lambda c: (c != "main", c))


def summarise(runs: pl.DataFrame, axes: list[str], metrics: list[str]) -> pl.DataFrame:
    """Per setting (axes except seed): n ok, n failed, n pending, mean and sample std of each metric."""
    setting = [a for a in axes if a != SEED_AXIS]
    ok = pl.col("status") == "ok"
    aggs = [ok.sum().alias("n"), (pl.col("status") == "failed").sum().alias("failed"),
            (pl.col("status") == "pending").sum().alias("pending")]
    if "status" in runs.columns and (runs["status"] == "pruned").any():
        aggs.append((pl.col("status") == "pruned").sum().alias("pruned"))
    for m in metrics:
        aggs += [pl.col(m).filter(ok).mean().alias(f"{m}_mean"), pl.col(m).filter(ok).std(ddof=1).alias(f"{m}_std")]
    if not setting:
        return runs.select(aggs)
    return runs.group_by(setting, maintain_order=True).agg(aggs)


def _lower_is_better(metric: str) -> bool:
    return any(t in metric.lower().rsplit(".", 1)[-1] for t in LOWER_IS_BETTER)


def best_rows(summary: pl.DataFrame, metrics: list[str]) -> dict[str, set[int]]:
    """Row indices holding the best mean of each metric (ties all marked)."""
    best: dict[str, set[int]] = {}
    for m in metrics:
        col = summary[f"{m}_mean"]
        vals = [v for v in col.to_list() if v is not None and not math.isnan(v)]
        if not vals:
            best[m] = set()
            continue
        target = min(vals) if _lower_is_better(m) else max(vals)
        best[m] = {i for i, v in enumerate(col.to_list()) if v is not None and math.isclose(v, target, rel_tol=1e-12)}
    return best


def _cells(summary: pl.DataFrame, metrics: list[str], digits: int, bold: tuple[str, str],
           pm: str) -> list[dict[str, str]]:
    best = best_rows(summary, metrics)
    rows = []
    for i, r in enumerate(summary.iter_rows(named=True)):
        cells = {}
        for m in metrics:
            mean, std = r[f"{m}_mean"], r[f"{m}_std"]
            if mean is None:
                cells[m] = "FAILED" if r["failed"] else "pruned" if r.get("pruned") else "—"
                continue
            txt = f"{mean:.{digits}f}" + (f" {pm} {std:.{digits}f}" if std is not None else "")
            cells[m] = f"{bold[0]}{txt}{bold[1]}" if i in best[m] else txt
        seeds = f"{r['n']}" + (f" ({r['failed']} failed)" if r["failed"] else "") + (
            f" ({r['pending']} pending)" if r["pending"] else "") + (f" ({r['pruned']} pruned)" if r.get("pruned") else "")
        rows.append({**cells, "seeds ok": seeds})
    return rows


def to_markdown(summary: pl.DataFrame, axes: list[str], metrics: list[str], digits: int = 3) -> str:
    """Markdown table: one row per setting, `mean ± std` cells, best per column in bold."""
    setting = [a for a in axes if a != SEED_AXIS]
    cells = _cells(summary, metrics, digits, ("**", "**"), "±")
    df = pl.DataFrame([{**{a: str(r[a]) for a in setting}, **c} for r, c in zip(summary.iter_rows(named=True), cells)])
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=10_000, tbl_width_chars=60_000):
        return str(df)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "—": "---"}


def _tex(s: str) -> str:
    return re.sub("|".join(map(re.escape, _TEX)), lambda m: _TEX[m.group(0)], s)


def to_latex(summary: pl.DataFrame, axes: list[str], metrics: list[str], digits: int = 3, caption: str = "") -> str:
    """LaTeX booktabs table (needs \\usepackage{booktabs}); best per column in \\textbf."""
    setting = [a for a in axes if a != SEED_AXIS]
    cells = _cells(summary, metrics, digits, ("\\textbf{", "}"), "$\\pm$")
    head = [_tex(a) for a in setting] + [_tex(m) for m in metrics] + ["seeds"]
    lines = ["\\begin{table}[t]", "\\centering", f"\\begin{{tabular}}{{{'l' * len(setting)}{'c' * len(metrics)}r}}",
             "\\toprule", " & ".join(head) + " \\\\", "\\midrule"]
    for r, c in zip(summary.iter_rows(named=True), cells):
        vals = [_tex(str(r[a])) for a in setting] + [c[m] for m in metrics] + [_tex(c["seeds ok"])]
        lines.append(" & ".join(vals) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex(caption or STD_NOTE)}}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def plot(summary: pl.DataFrame, axes: list[str], metric: str, path: Path, title: str = "") -> Path:
    """Horizontal bar plot of `metric` per setting with sample-std error bars (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setting = [a for a in axes if a != SEED_AXIS]
    labels = [" / ".join(str(r[a]) for a in setting) or "all" for r in summary.iter_rows(named=True)]
    means = [r[f"{metric}_mean"] if r[f"{metric}_mean"] is not None else float("nan") for r in summary.iter_rows(named=True)]
    stds = [r[f"{metric}_std"] or 0.0 for r in summary.iter_rows(named=True)]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.4))
    ax.barh(range(len(labels)), means, xerr=stds, capsize=3, color="#4c72b0")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({STD_NOTE})")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_report(out_dir: str | Path, write: bool = True, digits: int = 3) -> list[Table]:
    """Rebuild the tables of `out_dir` from its finished runs (one per task); write .md/.csv/.tex/.png."""
    out_dir = Path(out_dir)
    runs = collect(out_dir)
    if runs.is_empty():
        return []
    axes = grid_axes(out_dir, runs)
    tasks = runs["task"].unique(maintain_order=True).to_list()
    tables = []
    for task in tasks:
        sub = runs.filter(pl.col("task") == task)
        ok = sub.filter(pl.col("status") == "ok")
        metrics = [m for m in metric_columns(sub, axes) if ok[m].null_count() < ok.height]
        summary = summarise(sub, axes, metrics)
        caption = f"{task}: {STD_NOTE}; best per column in bold."
        md, tex = to_markdown(summary, axes, metrics, digits), to_latex(summary, axes, metrics, digits, caption)
        files: dict[str, Path] = {}
        if write:
            stem = out_dir / ("ablation" if len(tasks) == 1 else f"ablation-{task}")
            files = {"md": stem.with_suffix(".md"), "csv": stem.with_suffix(".csv"), "tex": stem.with_suffix(".tex")}
            files["md"].write_text(f"{caption}\n\n{md}\n")
            summary.write_csv(files["csv"])
            files["tex"].write_text(tex)
            if "main" in metrics:
                files["png"] = plot(summary, axes, "main", stem.with_suffix(".png"), title=f"{task} ablation")
        tables.append(Table(task, axes, metrics, summary, md, tex, files))
    return tables
