"""Turn a Grid into validated RunSpecs: registry names, part options, config fields and cached feature sets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from affcli.common.registry import OptionError, Registry, UnknownNameError
from affcli.heads.config import RunConfig
from affcli.heads.ablate.grid import (PART_AXES, SEED_AXIS, Grid, GridError, RunSpec, display, expand,
                               hashed_config, parse_loss, parse_part, run_name)

PROMPTS_AXIS = "prompts"
NOT_APPLICABLE = "—"


PART_FIELDS = ("task", "temporal", "fusion", "loss")


def _losses() -> Registry:
    from affcli.heads.losses import LOSSES

    return LOSSES


def config_fields() -> list[str]:
    """Flat key names of RunConfig (model fields included: grids name them directly)."""
    return RunConfig.keys()


def grid_error(key: str, e: Exception) -> GridError:
    """A refusal of heads.parts (or of a registry it asked) as a GridError naming the grid key."""
    from affcli.heads.parts import PartError

    if isinstance(e, UnknownNameError):
        return GridError(key, f"unknown {e.kind} {e.name!r}", e.valid)
    if isinstance(e, OptionError):
        return GridError(key, e.problem, e.valid)
    if isinstance(e, PartError):
        return GridError(key, e.problem, e.valid)
    return GridError(key, str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))


def check_value(field: str, value: Any, key: str) -> None:
    """Check one task/temporal/fusion/loss value with the resolution train-head and the model use (heads.parts)."""
    from affcli.heads import parts

    try:
        if field == "loss":
            parts.resolve_loss(str(value))
        elif field == "task":
            parts.TASKS.get(str(value))
        elif field == "temporal":
            parts.resolve_temporal(display(value))
        elif field == "fusion":
            parts.resolve_fusion(display(value))
    except (ValueError, KeyError) as e:
        raise grid_error(key, e) from None


def check_run(cfg: Any, key: str, modalities: dict[str, str] | None) -> None:
    """Every part of one run resolved as train-head resolves it, the fusion against the features' modalities."""
    try:
        cfg.resolve(modalities)
    except (ValueError, KeyError) as e:
        raise grid_error(key, e) from None


def cached_modalities(cache: str | Path) -> dict[str, str] | None:
    """{feature set: modality} recorded in the cache's fingerprints (None if it cannot tell)."""
    try:
        from affcli.cache.store import FeatureStore

        store = FeatureStore(cache, mode="r")
        return {s: m for s in store.feature_sets() if (m := store.fingerprint(s).get("modality"))}
    except Exception:
        return None


def cached_feature_sets(cache: str | Path) -> list[str]:
    """Feature sets present in a cache (FeatureStore, else the Zarr group names)."""
    try:
        from affcli.cache.store import FeatureStore

        return FeatureStore(cache, mode="r").feature_sets()
    except Exception:
        import zarr

        try:
            return sorted(zarr.open_group(str(cache), mode="r").group_keys())
        except Exception as e:
            raise GridError("cache", f"{cache}: not a readable feature cache ({type(e).__name__}: {e})") from None


def axis_field(axis: str, fields: list[str]) -> str:
    """The RunConfig field an axis sets (an axis is named after its field)."""
    if axis in fields:
        return axis
    raise GridError(f"axes.{axis}", "not a run-config field", fields)


def takes_prompts(loss: str) -> bool:
    """Whether any term of the loss has a `prompts` option (so a `prompts` axis changes it)."""
    return loss != "auto" and any("prompts" in _losses().options(p.name) for _, p in parse_loss(loss))


def prompt_sets_used(loss: str, run_prompts: str | None = None) -> list[str]:
    """Prompt-set names a loss reads: a term's `prompts=`, else the run's `prompts`, else the term's default."""
    if loss == "auto":
        return []
    used = []
    for _, p in parse_loss(loss):
        opts = _losses().options(p.name)
        if "prompts" not in opts:
            continue
        name = p.opts.get("prompts") or run_prompts or opts["prompts"].default
        if isinstance(name, str):
            used.append(name)
    return used


def cached_prompt_sets(cache: str | Path) -> list[str] | None:
    """Names of the CLIP text-embedding prompt sets in the cache (None if it cannot tell)."""
    try:
        from affcli.cache.store import FeatureStore

        return sorted({n for n, _ in FeatureStore(cache, mode="r").text_sets()})
    except Exception:
        return None


def apply_value(cfg: dict[str, Any], field: str, value: Any) -> None:
    """Set one axis value into a config dict; parts become their canonical string (`tcn(levels=3)`)."""
    cfg[field] = display(parse_part(value, field)) if field in PART_AXES else value


def _check_prompts(cfg: dict[str, Any], key: str, have: list[str] | None) -> None:
    if have is None:
        return
    for name in prompt_sets_used(str(cfg.get("loss", "auto")), cfg.get(PROMPTS_AXIS)):
        if name not in have:
            raise GridError(key, f"prompt set {name!r} has no text embeddings in the cache "
                                 f"(run `affcli prompts --cache C --set {name}`)", have)


def _base_config(grid: Grid, fields: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    base = dict(grid.base)
    for k, v in overrides.items():
        if v is not None:
            if k not in fields:
                raise GridError(k, "not a run-config field", fields)
            base[k] = str(v) if isinstance(v, Path) else v
    for k, v in base.items():
        if k not in fields:
            raise GridError(f"base.{k}", "not a run-config field", fields)
        if k in PART_FIELDS:
            check_value(k, v, f"base.{k}")
    for k in ("cache", "labels"):
        if not base.get(k):
            raise GridError(k, f"no {k} given: pass --{k} or set base.{k} in the grid")
    if "://" not in str(base["labels"]) and not Path(base["labels"]).is_dir():
        raise GridError("labels", f"{base['labels']}: no such label folder")
    return base


def _check_axes(grid: Grid, fields: list[str], prompt_sets: list[str] | None) -> None:
    values = [(f"axes.{a}[{i}]", a, v) for a, vals in grid.axes.items() for i, v in enumerate(vals)]
    values += [(f"include[{i}].{a}", a, x) for i, rule in enumerate(grid.include) for a, v in rule.items()
               for x in (v if isinstance(v, list) else [v])]
    for key, axis, v in values:
        field = axis_field(axis, fields)
        if axis == PROMPTS_AXIS:
            if prompt_sets is not None and str(v) not in prompt_sets:
                raise GridError(f"{key} = {v!r}", "prompt set has no text embeddings in the cache", prompt_sets)
        else:
            check_value(field, v, f"{key} = {display(v)!r}")


def build_runs(grid: Grid, cache: str | Path | None = None, labels: str | Path | None = None,
               overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """Expand and validate a grid into runs; raises GridError before anything runs."""
    fields = config_fields()
    for k in grid.ranges:
        raise GridError(f"axes.{k}", "a numeric range needs --search optuna (a grid runs lists of values)")
    base = _base_config(grid, fields, {"cache": cache, "labels": labels, **(overrides or {})})
    cache_path = base.get("cache")
    present = cached_feature_sets(cache_path) if cache_path else None
    prompt_sets = cached_prompt_sets(cache_path) if cache_path else None
    modalities = cached_modalities(cache_path) if cache_path else None
    _check_axes(grid, fields, prompt_sets)
    assigns = expand(grid)
    if not assigns:
        raise GridError("axes", "the grid is empty after exclude/include rules")
    all_axes = grid_meta(grid)["axes"]
    runs: list[RunSpec] = []
    by_hash: dict[str, RunSpec] = {}
    for a in assigns:
        cfg, shown = dict(base), {ax: display(a[ax]) if ax in a else "(base)" for ax in all_axes}
        for axis, v in a.items():
            if axis != PROMPTS_AXIS:
                apply_value(cfg, axis_field(axis, fields), v)
        if PROMPTS_AXIS in a:
            if takes_prompts(str(cfg.get("loss", "auto"))):
                cfg[PROMPTS_AXIS] = a[PROMPTS_AXIS]
            else:
                shown[PROMPTS_AXIS] = NOT_APPLICABLE
        key = f"run {run_name(shown)}"
        _check_prompts(cfg, key, prompt_sets)
        for fs in cfg.get("features") or []:
            if present is not None and fs not in present:
                raise GridError("features", f"feature set {fs!r} is not in the cache {cache_path}", present)
        try:
            run_cfg = RunConfig.from_dict(cfg)
        except (TypeError, ValueError, KeyError) as e:
            raise GridError(key, f"invalid run config: {e}") from None
        check_run(run_cfg, key, modalities)
        full = run_cfg.to_dict()
        h = hashed_config(full)
        if h in by_hash:
            if by_hash[h].axes == shown:
                continue
            raise GridError(key, f"same config as run {by_hash[h].name!r}: an axis value changes nothing")
        name = run_name(shown)
        if any(r.name == name for r in runs):
            name = f"{name}__{h[:6]}"
        by_hash[h] = RunSpec(name, shown, full, h, str(full.get("task", "")))
        runs.append(by_hash[h])
    return runs


def grid_meta(grid: Grid) -> dict[str, Any]:
    """What grid.json records about the grid itself (axes in order, source, base)."""
    axes = list(grid.axes) + [a for a in grid.ranges if a not in grid.axes]
    for rule in grid.include:
        axes += [a for a in rule if a not in axes]
    if SEED_AXIS in axes:
        axes = [a for a in axes if a != SEED_AXIS] + [SEED_AXIS]
    return {"axes": axes, "source": grid.source, "base": grid.base}
