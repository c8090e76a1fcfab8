"""Grid specs (TOML/YAML): a base run config plus axes; expansion into named, hashed runs, validated before any run."""
from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affcli.common.names import safe_name
from affcli.common.runs import config_hash
from affcli.heads import spec
from affcli.heads.spec import PartSpec

SEED_AXIS = "seed"
AXIS_ALIASES = {"seeds": "seed", "prompt": "prompts", "losses": "loss", "fusions": "fusion", "temporals": "temporal"}
PART_AXES = ("temporal", "fusion")
NOT_HASHED = ("out", "run_dir", "name", "skip_bad")


class GridError(ValueError):
    """A grid refused before any run starts; names the offending key and, where known, the valid names."""

    def __init__(self, key: str, message: str, valid: list[str] | None = None):
        self.key, self.valid = key, list(valid or [])
        tail = f"; valid: {', '.join(map(str, self.valid))}" if valid is not None else ""
        super().__init__(f"{key}: {message}{tail}")


@dataclass
class Grid:
    """A parsed grid spec: base config, axes in file order, exclude/include partial assignments."""

    base: dict[str, Any]
    axes: dict[str, list[Any]]
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


@dataclass
class RunSpec:
    """One run of a grid: readable name, axis values as written, full config dict and its hash."""

    name: str
    axes: dict[str, str]
    config: dict[str, Any]
    hash: str
    task: str

    def record(self) -> dict[str, Any]:
        """What grid.json and ablate.json store about this run."""
        return {"name": self.name, "hash": self.hash, "axes": self.axes, "task": self.task}


def parse_part(value: Any, key: str = "part") -> PartSpec:
    """`tcn(levels=3)` / `none:visual` / an inline table `{name = "tcn", levels = 3}` -> PartSpec."""
    if isinstance(value, PartSpec):
        return value
    if isinstance(value, dict):
        if "name" not in value:
            raise GridError(key, f"an inline part needs a 'name': {value!r}")
        return PartSpec(str(value["name"]), value.get("arg"), {k: v for k, v in value.items() if k not in ("name", "arg")})
    try:
        return spec.parse_part(str(value))
    except spec.SpecError as e:
        raise GridError(key, str(e)) from None


def parse_loss(value: Any, key: str = "loss") -> list[tuple[float, PartSpec]]:
    """`ce+0.1*text-contrastive` -> [(1.0, ce), (0.1, text-contrastive)]."""
    try:
        return spec.parse_loss(str(value))
    except spec.SpecError as e:
        raise GridError(key, str(e)) from None


def display(value: Any) -> str:
    """How an axis value is shown in names and tables; parts (PartSpec or inline tables) in canonical form."""
    if isinstance(value, (dict, PartSpec)):
        p = parse_part(value)
        opts = ", ".join(f"{k}={v}" for k, v in sorted(p.opts.items()))
        return p.name + (f":{p.arg}" if p.arg else "") + (f"({opts})" if opts else "")
    return str(value)


def load_grid(path: str | Path) -> Grid:
    """Read a grid spec from TOML (`.toml`) or YAML (`.yaml`/`.yml`)."""
    path = Path(path)
    if not path.exists():
        raise GridError(str(path), "grid file not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise GridError(str(path), "not a text file (binary bytes); give a .toml or .yaml grid spec") from None
    except OSError as e:
        raise GridError(str(path), f"unreadable ({e.strerror or e})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise GridError(str(path), f"not valid YAML: {' '.join(str(e).split())}") from None
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise GridError(str(path), f"not valid TOML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise GridError(str(path), f"a grid spec is a table of base/axes/exclude/include, not a {type(raw).__name__}")
    return grid_from_dict(raw, source=str(path))


def grid_from_dict(raw: dict[str, Any], source: str = "") -> Grid:
    """Build a Grid from the parsed file (keys: base, axes, exclude, include)."""
    known = ("base", "axes", "exclude", "include")
    for k in raw:
        if k not in known:
            raise GridError(k, "unknown top-level key", list(known))
    axes: dict[str, list[Any]] = {}
    ranges: dict[str, dict[str, Any]] = {}
    order = [AXIS_ALIASES.get(k, k) for k in (raw.get("axes") or {})]
    for k, v in (raw.get("axes") or {}).items():
        name = AXIS_ALIASES.get(k, k)
        if is_range(v):
            ranges[name] = check_range(f"axes.{k}", v)
            continue
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise GridError(f"axes.{k}", "empty axis: the grid would have no runs")
        if len({display(x) for x in vals}) != len(vals):
            raise GridError(f"axes.{k}", f"repeated value in {vals!r}")
        axes[name] = vals
    rules = {}
    for kind in ("exclude", "include"):
        items = raw.get(kind) or []
        items = [items] if isinstance(items, dict) else items
        rules[kind] = [{AXIS_ALIASES.get(k, k): v for k, v in r.items()} for r in items]
    return Grid(_flat_base(raw.get("base") or {}), axes, rules["exclude"], rules["include"], source, ranges, order)


RANGE_KINDS = ("log", "int", "float")


def is_range(value: Any) -> bool:
    """A numeric range axis of a search: a table with one of `log`, `int`, `float` (and optionally `step`)."""
    return isinstance(value, dict) and "name" not in value and any(k in value for k in RANGE_KINDS)


def check_range(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """{kind, low, high, step}: `{log = [1e-4, 1e-2]}` (floats sampled on a log scale), `{int = [16, 128]}` (integers,
    `step` optional), `{float = [0.0, 0.5]}`; refused with the key when malformed."""
    kinds = [k for k in RANGE_KINDS if k in value]
    extra = [k for k in value if k not in (*RANGE_KINDS, "step")]
    if len(kinds) != 1 or extra:
        raise GridError(key, f"a range is one of {{log = [lo, hi]}}, {{int = [lo, hi]}}, {{float = [lo, hi]}} "
                             f"(optionally with step), not {value!r}")
    kind = kinds[0]
    bounds = value[kind]
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
        raise GridError(key, f"{kind} range needs [low, high] numbers, not {bounds!r}")
    lo, hi = bounds
    if not lo < hi:
        raise GridError(key, f"{kind} range [{lo}, {hi}]: low must be below high")
    if kind == "int" and not (isinstance(lo, int) and isinstance(hi, int)):
        raise GridError(key, f"int range [{lo}, {hi}]: bounds must be integers")
    if kind == "log" and lo <= 0:
        raise GridError(key, f"log range [{lo}, {hi}]: bounds must be > 0")
    step = value.get("step")
    if step is not None and (kind == "log" or not isinstance(step, (int, float)) or step <= 0
                             or (kind == "int" and not isinstance(step, int))):
        raise GridError(key, f"step {step!r}: a positive number ({'an integer ' if kind == 'int' else ''}for "
                             f"{kind} ranges; log ranges take none)")
    return {"kind": kind, "low": lo, "high": hi, "step": step}


def _flat_base(base: dict[str, Any]) -> dict[str, Any]:
    """The base config with a `[base.model]` table's keys at top level, where axes name them."""
    from affcli.heads.config import RunConfig

    if not isinstance(base, dict):
        raise GridError("base", f"must be a table, not {type(base).__name__}")
    try:
        return RunConfig.flatten(base)
    except ValueError as e:
        raise GridError("base", str(e)) from None


def _matches(assign: dict[str, Any], rule: dict[str, Any]) -> bool:
    for k, want in rule.items():
        wants = want if isinstance(want, list) else [want]
        have = assign.get(k)
        if have is None:
            return False
        ok = any(display(have) == display(w) or (k in PART_AXES and isinstance(w, str) and "(" not in w
                                                   and ":" not in w and parse_part(have).name == w) for w in wants)
        if not ok:
            return False
    return True


def _check_rules(grid: Grid) -> None:
    for kind, rules in (("exclude", grid.exclude), ("include", grid.include)):
        for i, rule in enumerate(rules):
            if not rule:
                raise GridError(f"{kind}[{i}]", "empty rule")
            for k, v in rule.items():
                if kind == "exclude" and k not in grid.axes:
                    raise GridError(f"{kind}[{i}].{k}", "not an axis of this grid", list(grid.axes))
                if kind == "exclude":
                    names = {display(x) for x in grid.axes[k]} | ({parse_part(x).name for x in grid.axes[k]}
                                                                   if k in PART_AXES else set())
                    for w in (v if isinstance(v, list) else [v]):
                        if display(w) not in names:
                            raise GridError(f"{kind}[{i}].{k}", f"{display(w)!r} is not a value of this axis",
                                            [display(x) for x in grid.axes[k]])


def expand(grid: Grid) -> list[dict[str, Any]]:
    """Assignments {axis: value}: the cartesian product of the axes, minus excludes, plus includes."""
    _check_rules(grid)
    names = list(grid.axes)
    out = [dict(zip(names, combo)) for combo in itertools.product(*grid.axes.values())]
    out = [a for a in out if not any(_matches(a, r) for r in grid.exclude)]
    seen = {tuple(sorted((k, display(v)) for k, v in a.items())) for a in out}
    for rule in grid.include:
        fixed = dict(rule)
        if SEED_AXIS not in fixed and SEED_AXIS in grid.axes:
            fixed[SEED_AXIS] = grid.axes[SEED_AXIS]
        keys = list(fixed)
        for combo in itertools.product(*[v if isinstance(v, list) else [v] for v in fixed.values()]):
            a = dict(zip(keys, combo))
            sig = tuple(sorted((k, display(v)) for k, v in a.items()))
            if sig not in seen:
                seen.add(sig)
                out.append(a)
    return out


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9._=+,-]+", "-", text)).strip("-.") or "run"


def run_name(assign: dict[str, Any]) -> str:
    """Readable, filesystem-safe run name from its axis values (n/a and base values left out), seed last."""
    skip = ("(base)", "—")
    parts = [display(v) if k in (*PART_AXES, "loss") else f"{k}={display(v)}"
             for k, v in assign.items() if k != SEED_AXIS and display(v) not in skip]
    if SEED_AXIS in assign and display(assign[SEED_AXIS]) not in skip:
        parts.append(f"seed{assign[SEED_AXIS]}")
    return safe_name("__".join(_slug(p) for p in parts) or "base", "run name")


def hashed_config(cfg: dict[str, Any]) -> str:
    """Config hash of a full run config, ignoring where it is written and logged (tracking keys, and new keys at
    their defaults, are left out: a grid keeps its hashes across versions)."""
    from affcli.heads.config import hashable_config

    return config_hash(hashable_config({k: v for k, v in cfg.items() if k not in NOT_HASHED}))
