"""Turn a Grid into validated RunSpecs: registry names, part options, config fields and cached feature sets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from affcli.common.registry import OptionError, Registry, UnknownNameError
from affcli.heads.ablate.grid import (PART_AXES, SEED_AXIS, Grid, GridError, RunSpec, display, expand,
                               hashed_config, parse_loss, parse_part, run_name)

PROMPTS_AXIS = "prompts"
NOT_APPLICABLE = "—"


def _trainer() -> Any:
    from affcli.heads.train import trainer

    return trainer


def registries() -> dict[str, Registry]:
    """The registries an axis value is checked against, by config field."""
    from affcli.heads.fusion import FUSION
    from affcli.heads.losses import LOSSES
    from affcli.heads.tasks import TASK_HEADS
    from affcli.heads.temporal import TEMPORAL

    return {"temporal": TEMPORAL, "fusion": FUSION, "loss": LOSSES, "task": TASK_HEADS}


def config_fields() -> list[str]:
    """Flat key names of the trainer's RunConfig (model fields included: grids name them directly)."""
    return _trainer().RunConfig.keys()


def check_part(reg: Registry, name: str, opts: dict[str, Any], key: str) -> None:
    """Registry.check, its error re-raised as a GridError naming the grid key."""
    try:
        reg.check(name, opts)
    except UnknownNameError as e:
        raise GridError(key, f"unknown {reg.kind} {name!r}", e.valid) from None
    except OptionError as e:
        raise GridError(key, e.problem, e.valid) from None


def check_value(field: str, value: Any, key: str, regs: dict[str, Registry]) -> None:
    """Check one temporal/fusion/loss value against its registry."""
    if field == "loss":
        for _, part in ([] if value == "auto" else parse_loss(value, key)):
            check_part(regs["loss"], part.name, part.opts, key)
    elif field == "task":
        try:
            regs["task"].get(str(value))
        except UnknownNameError as e:
            raise GridError(key, f"unknown task {value!r}", e.valid) from None
    elif field in PART_AXES:
        part = parse_part(value, key)
        if part.arg is not None:
            from affcli.heads.fusion import MODALITIES

            if field != "fusion":
                raise GridError(key, f"{field} {part.name!r} takes no ':{part.arg}' argument")
            if part.arg not in MODALITIES:
                raise GridError(key, f"unknown modality {part.arg!r}", list(MODALITIES))
        opts = part.opts
        if field == "fusion":
            from affcli.heads.fusion import fusion_options

            opts = fusion_options(str(value))[1]
        check_part(regs[field], part.name, opts, key)


def check_modalities(cfg: dict[str, Any], key: str, modalities: dict[str, str] | None) -> None:
    """A `none:<modality>` fusion needs a feature set of that modality (`modalities`: the cache's, None = unknown)."""
    from affcli.heads.fusion import group_features

    fusion = cfg.get("fusion")
    if not fusion or not cfg.get("features") or modalities is None:
        return
    part = parse_part(fusion, key)
    try:
        have = group_features(list(cfg["features"]), modalities)
    except ValueError as e:
        raise GridError("features", str(e)) from None
    if part.arg is not None and part.arg not in have:
        raise GridError(key, f"fusion {display(fusion)!r} needs {part.arg} features; the run's features "
                             f"{cfg['features']} are {', '.join(have)}", list(have))


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


def takes_prompts(loss: str, regs: dict[str, Registry]) -> bool:
    """Whether any term of the loss has a `prompts` option (so a `prompts` axis changes it)."""
    return loss != "auto" and any("prompts" in regs["loss"].options(p.name) for _, p in parse_loss(loss))


def prompt_sets_used(loss: str, regs: dict[str, Registry], run_prompts: str | None = None) -> list[str]:
    """Prompt-set names a loss reads: a term's `prompts=`, else the run's `prompts`, else the term's default."""
    if loss == "auto":
        return []
    used = []
    for _, p in parse_loss(loss):
        opts = regs["loss"].options(p.name)
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


def _check_prompts(cfg: dict[str, Any], key: str, regs: dict[str, Registry], have: list[str] | None) -> None:
    if have is None:
        return
    for name in prompt_sets_used(str(cfg.get("loss", "auto")), regs, cfg.get(PROMPTS_AXIS)):
        if name not in have:
            raise GridError(key, f"prompt set {name!r} has no text embeddings in the cache "
                                 f"(run `affcli prompts --cache C --set {name}`)", have)


def _base_config(grid: Grid, fields: list[str], regs: dict[str, Registry], overrides: dict[str, Any]) -> dict[str, Any]:
    base = dict(grid.base)
    for k, v in overrides.items():
        if v is not None:
            if k not in fields:
                raise GridError(k, "not a run-config field", fields)
            base[k] = str(v) if isinstance(v, Path) else v
    for k, v in base.items():
        if k not in fields:
            raise GridError(f"base.{k}", "not a run-config field", fields)
        if k in regs:
            check_value(k, v, f"base.{k}", regs)
    for k in ("cache", "labels"):
        if not base.get(k):
            raise GridError(k, f"no {k} given: pass --{k} or set base.{k} in the grid")
    if "://" not in str(base["labels"]) and not Path(base["labels"]).is_dir():
        raise GridError("labels", f"{base['labels']}: no such label folder")
    return base


def _check_axes(grid: Grid, fields: list[str], regs: dict[str, Registry], prompt_sets: list[str] | None) -> None:
    values = [(f"axes.{a}[{i}]", a, v) for a, vals in grid.axes.items() for i, v in enumerate(vals)]
    values += [(f"include[{i}].{a}", a, x) for i, rule in enumerate(grid.include) for a, v in rule.items()
               for x in (v if isinstance(v, list) else [v])]
    for key, axis, v in values:
        field = axis_field(axis, fields)
        if axis == PROMPTS_AXIS:
            if prompt_sets is not None and str(v) not in prompt_sets:
                raise GridError(f"{key} = {v!r}", "prompt set has no text embeddings in the cache", prompt_sets)
        else:
            check_value(field, v, f"{key} = {display(v)!r}", regs)


def build_runs(grid: Grid, cache: str | Path | None = None, labels: str | Path | None = None,
               overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """Expand and validate a grid into runs; raises GridError before anything runs."""
    trainer, fields, regs = _trainer(), config_fields(), registries()
    base = _base_config(grid, fields, regs, {"cache": cache, "labels": labels, **(overrides or {})})
    cache_path = base.get("cache")
    present = cached_feature_sets(cache_path) if cache_path else None
    prompt_sets = cached_prompt_sets(cache_path) if cache_path else None
    modalities = cached_modalities(cache_path) if cache_path else None
    _check_axes(grid, fields, regs, prompt_sets)
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
            if takes_prompts(str(cfg.get("loss", "auto")), regs):
                cfg[PROMPTS_AXIS] = a[PROMPTS_AXIS]
            else:
                shown[PROMPTS_AXIS] = NOT_APPLICABLE
        key = f"run {run_name(shown)}"
        _check_prompts(cfg, key, regs, prompt_sets)
        for fs in cfg.get("features") or []:
            if present is not None and fs not in present:
                raise GridError("features", f"feature set {fs!r} is not in the cache {cache_path}", present)
        check_modalities(cfg, key, modalities)
        try:
            full = trainer.RunConfig.from_dict(cfg).to_dict()
        except (TypeError, ValueError, KeyError) as e:
            raise GridError(key, f"invalid run config: {e}") from None
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
    axes = list(grid.axes)
    for rule in grid.include:
        axes += [a for a in rule if a not in axes]
    if SEED_AXIS in axes:
        axes = [a for a in axes if a != SEED_AXIS] + [SEED_AXIS]
    return {"axes": axes, "source": grid.source, "base": grid.base}
