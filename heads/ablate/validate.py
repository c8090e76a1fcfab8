"""Turn a Grid into validated RunSpecs: registry names, part options, config fields and cached feature sets."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from affcli.common.registry import Registry, UnknownNameError
from affcli.heads.ablate.grid import (PART_AXES, SEED_AXIS, Grid, GridError, RunSpec, display, expand,
                               hashed_config, parse_loss, parse_part, run_name)
from affcli.heads.spec import PartSpec

PROMPTS_AXIS = "prompts"
NOT_APPLICABLE = "—"


def _trainer() -> Any:
    from affcli.heads import trainer

    return trainer


def registries() -> dict[str, Registry]:
    """The registries an axis value is checked against, by config field."""
    from affcli.heads.fusion import FUSION
    from affcli.heads.losses import LOSSES
    from affcli.heads.tasks import TASK_HEADS
    from affcli.heads.temporal import TEMPORAL

    return {"temporal": TEMPORAL, "fusion": FUSION, "loss": LOSSES, "task": TASK_HEADS}


def config_fields() -> list[str]:
    """Field names of the trainer's RunConfig."""
    return [f.name for f in dataclasses.fields(_trainer().RunConfig)]


def accepted_options(reg: Registry, name: str) -> set[str] | None:
    """Option names a registered part takes (None: it takes any)."""
    meta = reg.meta(name)
    if "options" in meta:
        return set(meta["options"])
    obj = reg.get(name)
    try:
        sig = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.name != "self"]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_part(reg: Registry, part: PartSpec, key: str) -> None:
    """Refuse an unregistered name or an option the part does not take."""
    try:
        reg.get(part.name)
    except UnknownNameError as e:
        raise GridError(key, f"unknown {reg.kind} {part.name!r}", e.valid) from None
    allowed = accepted_options(reg, part.name)
    if allowed is not None:
        for opt in part.opts:
            if opt not in allowed:
                raise GridError(key, f"{reg.kind} {part.name!r} takes no option {opt!r}", sorted(allowed))


def check_value(field: str, value: Any, key: str, regs: dict[str, Registry]) -> None:
    """Check one temporal/fusion/loss value against its registry."""
    if field == "loss":
        for _, part in parse_loss(value, key):
            check_part(regs["loss"], part, key)
    elif field == "task":
        try:
            regs["task"].get(str(value))
        except UnknownNameError as e:
            raise GridError(key, f"unknown task {value!r}", e.valid) from None
    elif field in PART_AXES:
        part = parse_part(value, key)
        check_part(regs[field], part, key)
        if part.arg is not None:
            from affcli.heads.fusion import MODALITIES

            if field != "fusion":
                raise GridError(key, f"{field} {part.name!r} takes no ':{part.arg}' argument")
            if part.arg not in MODALITIES:
                raise GridError(key, f"unknown modality {part.arg!r}", list(MODALITIES))


def check_modalities(cfg: dict[str, Any], key: str) -> None:
    """A `none:<modality>` fusion needs a feature set of that modality."""
    from affcli.heads.fusion import group_features

    fusion = cfg.get("fusion")
    if not fusion or not cfg.get("features"):
        return
    part = parse_part(fusion, key)
    try:
        have = group_features(list(cfg["features"]))
    except ValueError as e:
        raise GridError("features", str(e)) from None
    if part.arg is not None and part.arg not in have:
        raise GridError(key, f"fusion {display(fusion)!r} needs {part.arg} features; the run's features "
                             f"{cfg['features']} are {', '.join(have)}", list(have))


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
    """The RunConfig field an axis sets: the same name, or 'loss' for `prompts` when the config has no such field."""
    if axis in fields:
        return axis
    if axis == PROMPTS_AXIS:
        return "loss"
    raise GridError(f"axes.{axis}", "not a run-config field", fields)


def loss_string(terms: list[tuple[float, PartSpec]]) -> str:
    """Canonical loss string: `ce+0.1*text-contrastive(prompts=expr8)`."""
    return "+".join(("" if w == 1 else f"{w:g}*") + display(p) for w, p in terms)


def with_prompts(loss: str, prompts: str, regs: dict[str, Registry]) -> str | None:
    """The loss with `prompts=` set on every term that takes prompts; None if no term does."""
    if loss == "auto":
        return None
    terms, hit = [], False
    for w, p in parse_loss(loss):
        opts = accepted_options(regs["loss"], p.name)
        if opts is not None and "prompts" in opts:
            p, hit = PartSpec(p.name, p.arg, {**p.opts, "prompts": prompts}), True
        terms.append((w, p))
    return loss_string(terms) if hit else None


def prompt_sets_used(loss: str, regs: dict[str, Registry], run_prompts: str | None = None) -> list[str]:
    """Prompt-set names a loss reads: a term's `prompts=`, else the run's `prompts`, else the term's default."""
    if loss == "auto":
        return []
    used = []
    for _, p in parse_loss(loss):
        opts = accepted_options(regs["loss"], p.name)
        if opts is None or "prompts" not in opts:
            continue
        obj = regs["loss"].get(p.name)
        default = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters.get("prompts")
        name = p.opts.get("prompts") or run_prompts or (default.default if default is not None else None)
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
            loss = with_prompts(str(cfg.get("loss", "auto")), str(a[PROMPTS_AXIS]), regs)
            if loss is None:
                shown[PROMPTS_AXIS] = NOT_APPLICABLE
            elif PROMPTS_AXIS in fields:
                cfg[PROMPTS_AXIS] = a[PROMPTS_AXIS]
            else:
                cfg["loss"] = loss
        key = f"run {run_name(shown)}"
        check_modalities(cfg, key)
        _check_prompts(cfg, key, regs, prompt_sets)
        for fs in cfg.get("features") or []:
            if present is not None and fs not in present:
                raise GridError("features", f"feature set {fs!r} is not in the cache {cache_path}", present)
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
