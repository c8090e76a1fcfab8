"""Task records (registry TASKS): everything that differs between tasks - outputs, label files and columns, invalid
markers, ABAW folder names, main metric and scorer, default loss, submission format - in one frozen record per task.

Adding a task is adding one `Task` and `register_task(...)`; labels, scoring, prediction files and the CLI read it.
Calling a record builds its head (`TASKS.build(name, in_dim, hidden, dropout)`, what HeadModel does), as every
registry builds its part.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from affcli.common.registry import Registry
from affcli.common.vocab import AU_NAMES, CHALLENGE_FOLDERS, EXPR_CLASSES, LSD_CLASSES, SPLIT_FOLDERS, VA_NAMES
from affcli.heads import metrics

if TYPE_CHECKING:
    import torch
    from torch import nn

KINDS = ("class", "reg", "multilabel")
LAYOUTS = ("per-video", "annotation-file", "class-folders")
SPLIT_DIRS: Mapping[str, tuple[str, ...]] = MappingProxyType(SPLIT_FOLDERS)
Scorer = Callable[..., dict]  # (hard predictions, labels, edition[, zero_division=0]) -> metrics


@dataclass(frozen=True)
class Output:
    """One predicted quantity: label key, width and kind ('class' logits over `dim` classes, 'reg' values in [-1, 1],
    'multilabel' logits). `columns` name it in label tables and prediction files (a class output is one column of
    class ids), `invalid` is the label files' 'no label' marker, `names` the class names in label order."""

    key: str
    dim: int
    kind: str
    columns: tuple[str, ...] = ()
    invalid: float = -1
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"output {self.key!r}: unknown kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if not self.columns:
            cols = (self.key,) if self.kind == "class" else tuple(f"{self.key}{i}" for i in range(self.dim))
            object.__setattr__(self, "columns", cols)
        want = 1 if self.kind == "class" else self.dim
        if len(self.columns) != want:
            raise ValueError(f"output {self.key!r}: {len(self.columns)} columns, a {self.kind} output of width "
                             f"{self.dim} has {want}")

    @property
    def dtype(self) -> type:
        """numpy dtype of its labels and hard predictions."""
        return np.float32 if self.kind == "reg" else np.int64

    def hard(self, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Scored prediction from probabilities/values: class id (argmax), 0/1 per label (>= threshold), or values."""
        if self.kind == "class":
            return probs.argmax(-1).astype(np.int64)
        if self.kind == "multilabel":
            return (probs >= threshold).astype(np.int64)
        return probs.astype(np.float32)


@dataclass(frozen=True)
class LabelFiles:
    """How a task's labels are stored. 'per-video': one txt per id (header row, one row per frame) in Train_Set /
    Validation_Set of a challenge folder named in `folders` (every ABAW edition); 'annotation-file': one file per
    split named in `splits` (rows `video/NNNNN.jpg,<every output's columns>`); 'class-folders': a folder per split
    (`splits`) holding one image folder per class (class names, or `aliases` of them)."""

    layout: str
    folders: tuple[str, ...] = ()
    headers: tuple[tuple[str, ...], ...] = ()
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: SPLIT_DIRS)
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown label layout {self.layout!r}; valid layouts: {', '.join(LAYOUTS)}")


@dataclass(frozen=True)
class Submission:
    """ABAW prediction files: the value header, the image column of the one-file style, and whether rows are frames
    (`video/00001.jpg`; per-video txt files allowed) or one per id (`id.jpg`, one file only)."""

    header: str
    image_column: str = "image_location"
    per_frame: bool = True


@dataclass(frozen=True)
class Task:
    """One task: its outputs (in file order), label files, main metric and scorer (hard predictions, dense labels
    with optional mask_<key>, edition -> metrics dict), default loss and submission format."""

    name: str
    help: str
    outputs: tuple[Output, ...]
    labels: LabelFiles
    main_metric: str
    scorer: Scorer
    default_loss: str
    submission: Submission

    def __post_init__(self) -> None:
        if self.labels.layout == "per-video" and len(self.outputs) != 1:
            raise ValueError(f"task {self.name!r}: per-video label files hold one output, not {len(self.outputs)}")

    @property
    def keys(self) -> tuple[str, ...]:
        """Label keys of its outputs."""
        return tuple(o.key for o in self.outputs)

    @property
    def columns(self) -> list[str]:
        """Value columns of all outputs, in file order."""
        return [c for o in self.outputs for c in o.columns]

    def label_headers(self) -> tuple[tuple[str, ...], ...]:
        """Accepted header rows of a per-video label file (a class output: its class names; else its columns)."""
        if self.labels.headers:
            return self.labels.headers
        o = self.outputs[0]
        return (o.names if o.kind == "class" else o.columns,)

    def __call__(self, in_dim: int, hidden: tuple[int, ...], dropout: float) -> "nn.Module":
        """The task head: a small MLP per output on the fused features."""
        from affcli.heads.model.task_head import TaskHead

        return TaskHead(self, in_dim, hidden, dropout)


TASKS: Registry = Registry("task", supplied=("in_dim", "hidden", "dropout"))


def register_task(task: Task) -> Task:
    """Add a task record under its name (ValueError if the name is taken by another record)."""
    TASKS.register(task.name, help=task.help)(task)
    return task


def get_task(name: str) -> Task:
    """The record of a registered task (UnknownNameError listing the tasks)."""
    return TASKS.get(name)


def task_outputs(task: str) -> tuple[Output, ...]:
    """Outputs of a registered task (raises UnknownNameError listing the tasks)."""
    return get_task(task).outputs


def class_scorer(key: str, n_classes: int) -> Scorer:
    """Scorer of one plain classification output: macro F1 over n classes as `p_<key>`, accuracy, per-class F1."""

    def score(preds: dict[str, np.ndarray], labels: dict[str, np.ndarray], edition: str,
              zero_division: int = 0) -> dict:
        s = metrics.class_score(preds[key], labels[key], n_classes, labels.get(f"mask_{key}"), zero_division)
        return {"f1_macro": s["f1_macro"], "acc": s["acc"], f"p_{key}": s["f1_macro"],
                "f1_per_class": s["f1_per_class"], f"n_{key}": s["n"]}

    return score


def to_prediction(key: str, kind: str, y: "torch.Tensor") -> "torch.Tensor":
    """Raw head output -> what is scored/averaged: class probabilities, VA values, AU probabilities."""
    import torch

    if kind == "class":
        return torch.softmax(y.float(), -1)
    if kind == "multilabel":
        return torch.sigmoid(y.float())
    return y.float()


# ---- the task records ---------------------------------------------------------------------------------------------

EXPR = Output("expr", len(EXPR_CLASSES), "class", names=EXPR_CLASSES)
VA = Output("va", len(VA_NAMES), "reg", columns=VA_NAMES, invalid=-5.0)
AU = Output("au", len(AU_NAMES), "multilabel", columns=AU_NAMES)
LSD = Output("lsd", len(LSD_CLASSES), "class", names=LSD_CLASSES)


def _score_expr(p: dict, t: dict, edition: str, zero_division: int = 0) -> dict:
    return metrics.expr_score(p["expr"], t["expr"], edition=edition, mask=t.get("mask_expr"),
                              zero_division=zero_division)


def _score_va(p: dict, t: dict, edition: str, zero_division: int = 0) -> dict:
    return metrics.va_score(p["va"], t["va"], t.get("mask_va"))


def _score_au(p: dict, t: dict, edition: str, zero_division: int = 0) -> dict:
    return metrics.au_score(p["au"], t["au"], t.get("mask_au"), edition=edition, zero_division=zero_division)


def _score_mtl(p: dict, t: dict, edition: str, zero_division: int = 0) -> dict:
    """P_MTL = P_VA + P_EXPR + P_AU, each on its own valid frames (not only fully labelled frames, which inflates)."""
    va = _score_va(p, t, edition)
    ex, au = _score_expr(p, t, edition, zero_division), _score_au(p, t, edition, zero_division)
    return {**va, **ex, **au, "p_mtl": va["p_va"] + ex["p_expr"] + au["p_au"]}


for _task in (
    Task("expr", "8 expression logits", (EXPR,),
         LabelFiles("per-video", CHALLENGE_FOLDERS["expr"], headers=(EXPR_CLASSES, EXPR_CLASSES[:7])),
         "p_expr", _score_expr, "ce(weights=auto)", Submission(",".join(EXPR_CLASSES))),
    Task("va", "valence, arousal (tanh)", (VA,),
         LabelFiles("per-video", CHALLENGE_FOLDERS["va"]),
         "p_va", _score_va, "ccc", Submission(",".join(VA_NAMES))),
    Task("au", "12 AU logits (sigmoid)", (AU,),
         LabelFiles("per-video", CHALLENGE_FOLDERS["au"]),
         "p_au", _score_au, "bce(pos_weight=auto)", Submission(",".join(AU_NAMES))),
    Task("mtl", "VA + EXPR + AU, missing labels masked per task", (VA, EXPR, AU),
         LabelFiles("annotation-file", splits={
             "train": ("training_set_annotations.txt", "train_set.txt", "training_set.txt"),
             "val": ("validation_set_annotations.txt", "validation_set.txt", "val_set.txt")}),
         "p_mtl", _score_mtl, "ce(weights=auto)+ccc+bce(pos_weight=auto)",
         Submission("valence,arousal,expression,aus", image_column="image")),
    Task("lsd", "6 LSD expression logits", (LSD,),
         LabelFiles("class-folders", splits={"train": ("training_set_synthetic_images",),
                                             "val": ("validation_set_real_images",)}, aliases={"ANGER": "ANGRER"}),
         "p_lsd", class_scorer("lsd", len(LSD_CLASSES)), "ce(weights=auto)",
         Submission("expression", image_column="image", per_frame=False)),
):
    register_task(_task)
