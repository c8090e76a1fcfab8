"""RunConfig: one training run as a small, serialisable config (TOML/JSON file, CLI flags, ablation grids)."""
from __future__ import annotations

import dataclasses
import json
import tomllib
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from affcli.common.cli_options import option

if TYPE_CHECKING:
    from affcli.heads.parts import ModelParts, RunParts

DEPRECATED_KEYS = {"shift": "horizon"}


@dataclass
class ModelSpec:
    """The head architecture, `[model]` of a run config; with the task and input widths it rebuilds a model."""

    temporal: str = option("tcn", help="Temporal head: a registered name with options, e.g. 'tcn(levels=6, channels=512)'.")
    temporal_options: dict[str, Any] = option({}, help="Options of the temporal head (merged over the inline ones).")
    temporal_on: list[str] = option([], help="Modalities that get the temporal head (visual, audio); the others only "
                                            "their projection.", shown="all")
    fusion: str = option("auto", help="Fusion, e.g. xattn or none:visual (auto = none for one modality, else concat).")
    fusion_options: dict[str, Any] = option({}, help="Options of the fusion (merged over the inline ones).")
    d_model: int = option(128, help="Width each modality is projected to.")
    standardize: bool = option(True, help="Z-score each input dimension with the training split's statistics (valid "
                                          "frames only), stored in the model and applied wherever it runs; turn off "
                                          "for features that are already normalised.")
    head_hidden: list[int] = option([256], help="Hidden widths of the task head's MLP.")
    dropout: float = option(0.1, help="Dropout of the task head.")
    causal: bool = option(False, help="Never use frames after t (temporal heads and cross-attention).")
    label_position: str = option("frame", help="frame (every frame of the window) or last (the last frame's label).")
    pool: str = option("last", help="With label_position=last: last (output at the last frame) or mean (time-mean).")
    dilation: int = option(1, help="Frames between window samples (implies label_position last).")
    horizon: int = option(0, help="Forecast the label H frames after the window's last frame (implies label_position "
                                  "last; with --causal: from frames <= t to the label at t + H; CAPNet's 10).")
    frame_mask_p: float = option(0.0, help="Augmentation: fraction of window frames masked (train only).")
    frame_mask_mode: str = option("token", help="Masked frames become a learned token (token) or zeros (zero).")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Build from a dict (a [model] table, or a checkpoint's spec); unknown keys refused with the valid ones.
        Deprecated names (DEPRECATED_KEYS, e.g. `shift` -> `horizon`) are read here, the one place, with a warning."""
        names = [f.name for f in fields(cls)]
        kw = dict(d)
        for old, new in DEPRECATED_KEYS.items():
            if old in kw:
                if new in kw and kw[new] != kw[old]:
                    raise ValueError(f"model key {old!r} (deprecated) and {new!r} disagree ({kw[old]!r} vs {kw[new]!r})")
                warnings.warn(f"model key {old!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=2)
                kw[new] = kw.pop(old)
        unknown = [k for k in kw if k not in names]
        if unknown:
            raise ValueError(f"unknown model key {unknown[0]!r}; valid keys: {', '.join(names)}")
        for k in ("head_hidden", "temporal_on"):
            if k in kw and not isinstance(kw[k], list):
                kw[k] = list(kw[k]) if isinstance(kw[k], tuple) else [kw[k]]
        for k in ("temporal_options", "fusion_options"):
            if kw.get(k) is None:
                kw[k] = {}
            elif not isinstance(kw[k], dict):
                raise ValueError(f"model {k} must be a table/dict, not {type(kw[k]).__name__}")
        if (kw.get("horizon") or kw.get("dilation", 1) != 1) and "label_position" not in kw:
            kw["label_position"] = "last"  # --horizon H / --dilation D imply one forecast per window end
        spec = cls(**kw)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Value checks that need no registry or data."""
        if self.label_position not in ("frame", "last"):
            raise ValueError(f"label_position must be 'frame' or 'last', not {self.label_position!r}")
        if self.pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', not {self.pool!r}")
        if self.frame_mask_mode not in ("zero", "token"):
            raise ValueError(f"frame_mask_mode must be 'zero' or 'token', not {self.frame_mask_mode!r}")
        if not 0 <= self.frame_mask_p < 1:
            raise ValueError(f"frame_mask_p must be in [0, 1), not {self.frame_mask_p}")
        if self.horizon < 0:
            raise ValueError(f"horizon must be >= 0, not {self.horizon}")
        if (self.dilation != 1 or self.horizon != 0) and self.label_position != "last":
            raise ValueError("dilation and horizon need label_position = 'last' (one forecast per window end)")
        bad = [m for m in self.temporal_on if m not in ("visual", "audio")]
        if bad:
            raise ValueError(f"temporal_on: unknown modality {bad[0]!r}; use visual and/or audio")

    def resolve(self, modalities: list[str] | None = None) -> "ModelParts":
        """The temporal head and fusion this spec names, checked against the registries and, when known, the
        modalities of the features (heads.parts, the one resolution train-head, the model and grids share)."""
        from affcli.heads.parts import resolve_model

        return resolve_model(self, modalities)


MODEL = "model"
MODEL_KEYS = [f.name for f in dataclasses.fields(ModelSpec)]
_ROUTED = (*MODEL_KEYS, *DEPRECATED_KEYS)


INTERPOLATE = ("off", "linear", "nearest")
RUN_KINDS = ("single", "folds", "ensemble")
RUN_META_KEYS = ("kind", "ensemble", "fold_info")
"""config.json keys that describe a run folder's kind (a fold run's assignment, an ensemble's members), not knobs."""
TRACKING_KEYS = ("tensorboard", "mlflow")
"""Run-config keys that change where a run is logged, never what it computes (left out of config hashes)."""
NEW_DEFAULTS = {"folds": 0, "fold_by": None}
"""Keys added after runs were hashed: left out of a config's hash while at these defaults, so older ablation folders
keep their hashes (and are not re-run)."""


def run_kind(run_dir: str | Path) -> str:
    """'single' (one trained head), 'folds' (K fold sub-runs) or 'ensemble' (member runs), from config.json."""
    from affcli.common.runs import read_json

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError("no config.json (not a train-head, fold or ensemble run folder)")
    try:
        kind = read_json(path).get("kind", "single")
    except (ValueError, AttributeError):
        raise ValueError(f"{path}: not a JSON object") from None
    if kind not in RUN_KINDS:
        raise ValueError(f"{path}: unknown run kind {kind!r}; valid: {', '.join(RUN_KINDS)}")
    return kind


def hashable_config(d: dict[str, Any]) -> dict[str, Any]:
    """A flat or nested config dict without the tracking keys and with new keys at their defaults left out."""
    return {k: v for k, v in d.items() if k not in TRACKING_KEYS and not (k in NEW_DEFAULTS and v == NEW_DEFAULTS[k])}


def split_runs(value: Any) -> list[str]:
    """Run folders from a comma list, a list of comma lists or None (`--distill-from a,b` or repeated)."""
    items = [value] if isinstance(value, str) else list(value or [])
    return [r.strip() for item in items for r in str(item).split(",") if r.strip()]


def resolve_path(p: str | None) -> str | None:
    """An absolute local path (URLs such as s3://... and None unchanged)."""
    return p if p is None or "://" in p else str(Path(p).expanduser().resolve())


@dataclass
class RunConfig:
    """Every knob of a head run; the head architecture is the nested `model` ([model] table, ModelSpec)."""

    task: str = option("expr", help="Task.")
    features: list[str] = option([], short="-f", shown="all in the cache",
                                 help="Feature set, repeatable; its modality (visual/audio) is read from the cache.")
    cache: str | None = option(None, help="Feature cache (Zarr) written by `affcli extract`.")
    labels: str | None = option(None, help="Labels: the ABAW annotation folder or a challenge folder (a Train_Set/"
                                           "Validation_Set parent); a flat folder of txt files is one split (evaluate).")
    splits: list[str] = option(["train", "val"], help="The train and the validation split (give both).")
    audio_valid: str | None = option(None, help="A 1-d audio feature set of the cache, e.g. vad:silero: audio "
                                                "frames where it is below --audio-valid-threshold (nobody speaks) are "
                                                "invalid, so the fusion masks them (it sees the mask, not zeros); it "
                                                "is read whether or not it is also one of --features.")
    audio_valid_threshold: float = option(0.5, help="With --audio-valid: the value a frame must reach.")
    skip_bad: bool = option(False, help="Leave out videos whose cached arrays fail their checksum or fingerprint "
                                         "(one warning line each) instead of refusing the run.")
    model: ModelSpec = option(ModelSpec, help="The head architecture.")
    loss: str = option("auto", help="Loss: a weighted sum such as 'ce(weights=auto)+0.1*text-contrastive'; auto = task default.")
    prompts: str | None = option(None, help="Prompt set the prompt-based losses read.", shown="each loss's own")
    window: int = option(32, help="Window length in frames.")
    stride: int = option(16, help="Window stride in frames.")
    eval_stride: int | None = option(None, help="Stride of the overlapping evaluation windows.", shown="window / 2")
    smooth: int = option(0, help="Average predictions over +-N frames per video before scoring.")
    batch_size: int = option(64, help="Windows per step.")
    epochs: int = option(20, help="Maximum epochs.")
    lr: float = option(1e-3, help="AdamW learning rate (cosine schedule).")
    weight_decay: float = option(1e-2, help="AdamW weight decay.")
    warmup: float = option(1.0, help="Linear warm-up, in epochs.")
    grad_clip: float = option(1.0, help="Gradient-norm clip (0 = off).")
    patience: int = option(5, help="Early stopping: epochs without a better val metric.")
    seed: int = option(0, help="Seed.")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1.")
    amp: bool = option(True, help="bf16 autocast on CUDA.")
    ssl_epochs: int = option(0, help="Self-supervised epochs on the train split's features before training (0 = off).")
    ssl_method: str = option("masked", help="Self-supervised method of --ssl-epochs (heads/pretrain.py registry): "
                                            "masked, simclr, byol, with options, e.g. 'simclr(temperature=0.2)'.")
    ssl_positives: str = option("none", help="Emotion-aware positives of --ssl-epochs: none, kmeans (pseudo-classes "
                                             "of the encoder's embeddings, refreshed per epoch), text (nearest CLIP "
                                             "prompt), both.")
    init_from: str | None = option(None, help="An `affcli pretrain` run whose encoder (projection + temporal head) "
                                              "weights start this run.")
    freeze_encoder: bool = option(False, help="Freeze the encoder (projection + temporal head) and train a linear task "
                                              "head on it: a linear probe (head_hidden defaults to none; set it for an "
                                              "MLP probe).")
    distill_from: list[str] = option([], help="Finished runs (comma list) whose per-frame outputs, cached in the "
                                              "feature cache under teacher/<run-hash>, are soft targets where labels "
                                              "are missing; the loss gains a distill term unless it names one.")
    distill_weight: float = option(1.0, help="Weight of the distill term added for --distill-from.")
    interpolate: str = option("off", help="Predictions on frames without a face, from the nearest frames with one: "
                                          "off, linear (values and probabilities linear) or nearest (values linear, "
                                          "class and multi-label probabilities copied from the nearest frame).")
    tune_thresholds: bool = option(False, help="Tune one decision threshold per multi-label output (each AU) on the "
                                               "val split after training; stored in the run, used by predict/evaluate.")
    tune_bias: bool = option(False, help="Tune one logit bias per class of a class output (EXPR) on the val split "
                                         "after training; stored in the run, used by predict/evaluate.")
    edition: str = option("abaw3+", help="Metrics edition: abaw3+ or abaw1-2.")
    name: str | None = option(None, help="Run name.", shown="the --out folder's name")
    out: str = option("runs/run", help="Run folder (config, metrics, checkpoint, predictions, plots).")
    save_predictions: bool = option(True, help="Write predictions_val.parquet.")
    plots: bool = option(True, help="Write curves and confusion/VA plots.")
    folds: int = option(0, help="K-fold cross-validation (0 = off, else K >= 2): the labelled videos of both splits "
                                "are pooled and split into K folds by video (a video's _left/_right ids together), "
                                "one sub-run per fold (--out/fold<k>), out-of-fold predictions for every labelled "
                                "frame, metrics per fold with mean ± std; fold assignment seeded by --seed.")
    fold_by: str | None = option(None, help="With --folds: a text file mapping videos to groups (lines `video,group`, "
                                            "e.g. subjects) that stay in one fold.", shown="each video its own group")
    tensorboard: bool = option(True, help="Write TensorBoard event files in the run folder (loss, validation "
                                          "metrics, learning rate per epoch): `tensorboard --logdir runs/`.")
    mlflow: str | None = option(None, help="Also log parameters, metrics and the run folder to this MLflow tracking "
                                           "server URI (pip install 'affcli[mlflow]').", shown="off")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML-able): the architecture under 'model'."""
        return dataclasses.asdict(self)

    @staticmethod
    def fields() -> list[str]:
        """Top-level field names ('model' is a table)."""
        return [f.name for f in dataclasses.fields(RunConfig)]

    @staticmethod
    def keys() -> list[str]:
        """Flat key names: the top-level fields and the model's (what CLI flags and ablation grid axes name)."""
        return [k for k in RunConfig.fields() if k != MODEL] + MODEL_KEYS

    @classmethod
    def nest(cls, d: dict[str, Any]) -> dict[str, Any]:
        """The one mapping of flat model keys (`d_model = 64`, as in old configs, grids and CLI flags) into the
        `model` table; a key given both ways must agree."""
        out = {k: v for k, v in d.items() if k not in _ROUTED}
        model = out.get(MODEL) or {}
        if isinstance(model, ModelSpec):
            model = model.to_dict()
        if not isinstance(model, dict):
            raise ValueError(f"run-config model must be a table/dict, not {type(model).__name__}")
        model = dict(model)
        for k in _ROUTED:
            if k in d:
                if k in model and model[k] != d[k]:
                    raise ValueError(f"run-config {k} is given twice ({d[k]!r} and model.{k} = {model[k]!r})")
                model[k] = d[k]
        if model or MODEL in out:
            out[MODEL] = model
        return out

    @classmethod
    def flatten(cls, d: dict[str, Any]) -> dict[str, Any]:
        """The inverse of `nest`: the model table's keys at top level (the one namespace grids and flags use)."""
        n = cls.nest(d)
        return {**{k: v for k, v in n.items() if k != MODEL}, **n.get(MODEL, {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Build from a nested or flat dict; unknown keys and bad values are refused with a one-line ValueError."""
        kw = cls.nest(d)
        unknown = [k for k in kw if k not in cls.fields()]
        if unknown:
            raise ValueError(f"unknown run-config key {unknown[0]!r}; valid keys: {', '.join(cls.keys())}")
        for k in ("features", "splits"):
            if k in kw and kw[k] is not None and not isinstance(kw[k], list):
                kw[k] = list(kw[k]) if isinstance(kw[k], tuple) else [kw[k]]
        if "distill_from" in kw:
            kw["distill_from"] = split_runs(kw["distill_from"])
        if kw.get("freeze_encoder") and "head_hidden" not in (kw.get(MODEL) or {}):
            kw[MODEL] = {**(kw.get(MODEL) or {}), "head_hidden": []}
        kw[MODEL] = ModelSpec.from_dict(kw.get(MODEL) or {})
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Cheap checks that need no data (names are checked when the model is built)."""
        for k in ("window", "stride", "batch_size", "epochs"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, not {getattr(self, k)}")
        self.model.validate()
        if self.edition not in ("abaw3+", "abaw1-2"):
            raise ValueError(f"edition must be 'abaw3+' or 'abaw1-2', not {self.edition!r}")
        if len(self.splits) != 2:
            raise ValueError(f"splits must be [train, val], not {self.splits}")
        if self.interpolate not in INTERPOLATE:
            raise ValueError(f"interpolate must be one of {', '.join(INTERPOLATE)}, not {self.interpolate!r}")
        if self.distill_weight < 0:
            raise ValueError(f"distill_weight must be >= 0, not {self.distill_weight}")
        if self.folds < 0 or self.folds == 1:
            raise ValueError(f"folds must be 0 (off) or >= 2, not {self.folds}")
        if self.fold_by and not self.folds:
            raise ValueError("fold_by needs folds >= 2 (--folds K)")

    def resolve(self, modalities: Mapping[str, str] | None = None) -> "RunParts":
        """Every named part of the run (task, temporal, fusion, loss, pretraining method) checked once by
        heads.parts; `modalities` ({feature set: modality}) also checks the fusion against the features."""
        from affcli.heads.parts import resolve_run

        return resolve_run(self, modalities)

    def with_resolved_paths(self) -> "RunConfig":
        """A copy whose cache and labels are absolute (what a run folder stores, so it works from any directory)."""
        return dataclasses.replace(self, cache=resolve_path(self.cache), labels=resolve_path(self.labels),
                                   distill_from=[resolve_path(r) for r in self.distill_from],
                                   init_from=resolve_path(self.init_from))

    @classmethod
    def from_run(cls, run_dir: str | Path, **overrides: Any) -> "RunConfig":
        """The RunConfig a run was trained with (its config.json, flat or nested), with non-None top-level overrides."""
        from affcli.common.runs import read_json

        path = Path(run_dir) / "config.json"
        if not path.exists():
            raise FileNotFoundError("no config.json (not a train-head run folder)")
        d = {k: v for k, v in read_json(path).items() if k not in RUN_META_KEYS}
        d.update({k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items() if v is not None})
        return cls.from_dict(d)

    def check_paths(self, labels: bool = True) -> None:
        """Refuse a run whose stored (or overriding) cache or label root is missing, naming the option that fixes it."""
        need = {"cache": self.cache, **({"labels": self.labels} if labels else {})}
        for key, p in need.items():
            if not p:
                raise ValueError(f"no {key} in config.json: give --{key}")
            if "://" not in p and not (Path(p).is_dir() if key == "labels" else Path(p).exists()):
                raise FileNotFoundError(f"{key} {p} not found (from config.json unless --{key} is given)")

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        """Read a .toml (top level or a [run] table) or .json config, nested or flat; `overrides` (flat or nested keys,
        not None) win."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text()) if path.suffix.lower() == ".toml" else json.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot parse config: {e}") from None
        try:
            raw = cls.nest(raw.get("run", raw))
            over = cls.nest({k: v for k, v in overrides.items() if v is not None})
            if MODEL in over:
                over[MODEL] = {**(raw.get(MODEL) or {}), **over[MODEL]}
            return cls.from_dict({**raw, **over})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
