"""Losses (registry LOSSES) with typed options, parsed from sums like `ce+0.1*text-contrastive`; labels are masked."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from affcli.common.checks import NonNegativeFloat, PositiveFloat, Range
from affcli.common.registry import Registry
from affcli.heads.spec import PartSpec, parse_loss
from affcli.heads.tasks import Output, get_task, task_outputs

LOSSES: Registry = Registry("loss", supplied=("ctx",))
VA_CENTRES = (-0.66, 0.0, 0.66)


@dataclass
class LossContext:
    """What a loss may need at build time: task outputs, train labels (auto weights), text embeddings, feature dim."""

    task: str
    feat_dim: int
    train_labels: dict[str, torch.Tensor] = field(default_factory=dict)
    text: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher: Callable[[Any], dict[str, torch.Tensor]] | None = None
    device: torch.device | str = "cpu"
    prompts: str | None = None
    distill_from: tuple[str, ...] = ()

    @property
    def outputs(self) -> tuple[Output, ...]:
        """The task's outputs."""
        return task_outputs(self.task)


def label_mask(y: dict[str, torch.Tensor], key: str, like: torch.Tensor) -> torch.Tensor:
    """The label mask of `key` broadcast to the label's shape (per frame or per element)."""
    m = y[f"mask_{key}"]
    while m.dim() < like.dim():
        m = m.unsqueeze(-1)
    return m.expand_as(like)


def masked_mean(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of v over mask; values at masked-out positions never enter (torch.where, not multiplication)."""
    return torch.where(mask, v, torch.zeros((), dtype=v.dtype, device=v.device)).sum() / mask.sum().clamp_min(1)


def _target(ctx: LossContext, kind: str, target: str | None, loss: str) -> Output:
    outs = [o for o in ctx.outputs if o.kind == kind and (target is None or o.key == target)]
    if not outs:
        have = ", ".join(f"{o.key} ({o.kind})" for o in ctx.outputs)
        raise ValueError(f"loss {loss}: task {ctx.task} has no {kind} output{f' {target!r}' if target else ''}; outputs: {have}")
    return outs[0]


def _weights(spec: Any, ctx: LossContext, key: str, n: int, what: str) -> torch.Tensor | None:
    """None, 'auto' (inverse frequency over valid train labels) or an explicit list of n numbers."""
    if spec is None:
        return None
    if isinstance(spec, str) and spec == "auto":
        if key not in ctx.train_labels:
            raise ValueError(f"{what}=auto needs train labels {key!r}")
        y, m = ctx.train_labels[key], ctx.train_labels[f"mask_{key}"]
        if y.dim() == 1:
            counts = torch.bincount(y[m].long(), minlength=n).double()
            w = counts.sum() / (n * counts.clamp_min(1))
        else:
            mm = m if m.dim() == y.dim() else m.unsqueeze(-1).expand_as(y)
            pos = ((y > 0) & mm).sum(0).double()
            neg = ((y <= 0) & mm).sum(0).double()
            w = (neg / pos.clamp_min(1)).clamp(1.0, 100.0)
        return w.float().to(ctx.device)
    vals = [float(v) for v in (spec if isinstance(spec, (list, tuple)) else [spec] * n)]
    if len(vals) != n:
        raise ValueError(f"{what}: {len(vals)} values given, {key} has {n}")
    return torch.tensor(vals, device=ctx.device)


@LOSSES.register("ce", help="cross-entropy; weights=auto (inverse frequency) or a list")
class CrossEntropy(nn.Module):
    """Class-weighted cross-entropy over labelled frames (weighted mean, as torch does)."""

    def __init__(self, ctx: LossContext, weights: Any = None, target: str | None = None,
                 label_smoothing: Annotated[float, Range(0, 1, hi_open=True)] = 0.0):
        super().__init__()
        self.out = _target(ctx, "class", target, "ce")
        self.register_buffer("w", _weights(weights, ctx, self.out.key, self.out.dim, "ce weights"), persistent=False)
        self.smooth = float(label_smoothing)

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        k = self.out.key
        m = y[f"mask_{k}"]
        lab = torch.where(m, y[k], 0).long()
        logits = out[k].float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), reduction="none",
                             label_smoothing=self.smooth).view_as(lab)
        if self.w is None:
            return masked_mean(ce, m)
        wy = self.w[lab]
        return torch.where(m, ce * wy, 0.0).sum() / torch.where(m, wy, 0.0).sum().clamp_min(1e-8)


@LOSSES.register("focal", help="focal loss; alpha = float, list or auto")
class Focal(nn.Module):
    """Focal loss alpha_y (1 - p_y)^gamma CE for unbalanced classes."""

    def __init__(self, ctx: LossContext, gamma: NonNegativeFloat = 2.0, alpha: Any = None, target: str | None = None):
        super().__init__()
        self.out = _target(ctx, "class", target, "focal")
        self.gamma = float(gamma)
        self.register_buffer("alpha", _weights(alpha, ctx, self.out.key, self.out.dim, "focal alpha"), persistent=False)

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        k = self.out.key
        m = y[f"mask_{k}"]
        lab = torch.where(m, y[k], 0).long()
        logp = torch.log_softmax(out[k].float(), -1).gather(-1, lab.unsqueeze(-1)).squeeze(-1)
        f = -((1 - logp.exp()) ** self.gamma) * logp
        if self.alpha is not None:
            f = f * self.alpha[lab]
        return masked_mean(f, m)


def ccc_per_dim(x: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Masked concordance correlation per last dim (population moments), [..., K] -> [K]."""
    x, t = x.float().reshape(-1, x.shape[-1]), t.float().reshape(-1, t.shape[-1])
    m = m.reshape(-1, m.shape[-1])
    zero = torch.zeros((), device=x.device)
    n = m.sum(0).clamp_min(1)
    x, t = torch.where(m, x, zero), torch.where(m, t, zero)
    mx, mt = x.sum(0) / n, t.sum(0) / n
    dx, dt = torch.where(m, x - mx, zero), torch.where(m, t - mt, zero)
    vx, vt, cov = (dx * dx).sum(0) / n, (dt * dt).sum(0) / n, (dx * dt).sum(0) / n
    return 2 * cov / (vx + vt + (mx - mt) ** 2 + 1e-8)


@LOSSES.register("ccc", help="1 - CCC per dimension, averaged")
class CCCLoss(nn.Module):
    """1 - concordance correlation, per VA dimension, mean."""

    def __init__(self, ctx: LossContext, target: str | None = None):
        super().__init__()
        self.out = _target(ctx, "reg", target, "ccc")

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        k = self.out.key
        return (1 - ccc_per_dim(out[k], y[k], label_mask(y, k, y[k]))).mean()


@LOSSES.register("mse", help="mean squared error")
class MSELoss(nn.Module):
    """Masked mean squared error."""

    def __init__(self, ctx: LossContext, target: str | None = None):
        super().__init__()
        self.out = _target(ctx, "reg", target, "mse")

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        k = self.out.key
        m = label_mask(y, k, y[k])
        return masked_mean((out[k].float() - torch.where(m, y[k], 0.0).float()) ** 2, m)


@LOSSES.register("bce", help="binary CE per AU; pos_weight=auto (neg/pos) or a list")
class BCELoss(nn.Module):
    """Masked binary cross-entropy with per-label positive weights."""

    def __init__(self, ctx: LossContext, pos_weight: Any = None, target: str | None = None):
        super().__init__()
        self.out = _target(ctx, "multilabel", target, "bce")
        self.register_buffer("pw", _weights(pos_weight, ctx, self.out.key, self.out.dim, "bce pos_weight"), persistent=False)

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        k = self.out.key
        m = label_mask(y, k, y[k])
        t = torch.where(m, y[k], 0).float().clamp(0, 1)
        b = F.binary_cross_entropy_with_logits(out[k].float(), t, pos_weight=self.pw, reduction="none")
        return masked_mean(b, m)


def _text(ctx: LossContext, name: str, loss: str) -> torch.Tensor:
    if name not in ctx.text:
        have = ", ".join(ctx.text) or "none"
        raise ValueError(f"loss {loss}: no CLIP text embeddings for prompt set {name!r} (cached sets: {have}); "
                         f"run `affcli prompts --cache C --set {name}`")
    return F.normalize(ctx.text[name].float().to(ctx.device), dim=-1)


def _frames(out: dict, y: dict, key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, labels and per-frame/window mask flattened over batch (and time)."""
    feat, lab = out["feat"], y[key]
    m = y[f"mask_{key}"]
    if m.dim() > feat.dim() - 1:
        m = m.all(-1)
    return feat.reshape(-1, feat.shape[-1]), lab.reshape(-1, *lab.shape[m.dim():]), m.reshape(-1)


@LOSSES.register("text-contrastive",
                 help="InfoNCE between projected visual features and CLIP text embeddings of the class prompts")
class TextContrastive(nn.Module):
    """Visual features projected into the CLIP text space, contrasted with the class prompt embeddings."""

    def __init__(self, ctx: LossContext, prompts: str | None = None, temperature: PositiveFloat = 0.07,
                 symmetric: bool = True, target: str | None = None):
        super().__init__()
        self.out = _target(ctx, "class", target, "text-contrastive")
        prompts = prompts or ctx.prompts or "expr8"
        text = _text(ctx, prompts, "text-contrastive")
        if text.shape[0] != self.out.dim:
            raise ValueError(f"loss text-contrastive: prompt set {prompts!r} has {text.shape[0]} prompts, "
                             f"{self.out.key} has {self.out.dim} classes")
        self.register_buffer("text", text, persistent=False)
        self.proj = nn.Linear(ctx.feat_dim, text.shape[1])
        self.tau, self.symmetric = float(temperature), bool(symmetric)

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        f, lab, m = _frames(out, y, self.out.key)
        f, lab = f[m], lab[m].long()
        if f.shape[0] == 0:
            return out["feat"].sum() * 0.0
        logits = F.normalize(self.proj(f.float()), dim=-1) @ self.text.T / self.tau
        v2t = F.cross_entropy(logits, lab)
        if not self.symmetric:
            return v2t
        pos = F.one_hot(lab, logits.shape[1]).bool()
        present = pos.any(0)
        t2v = torch.logsumexp(logits, 0) - torch.logsumexp(logits.masked_fill(~pos, -math.inf), 0)
        return (v2t + t2v[present].mean()) / 2


def va_centres(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 9 region centres of the 3x3 VA grid, valence-major: [(v, a) for v in C for a in C]."""
    c = torch.tensor(VA_CENTRES)
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(9, 2).to(device)


def soft_region_labels(va: torch.Tensor, sigma: float) -> torch.Tensor:
    """softmax(-d^2 / (2 sigma^2)) of VA [..., 2] over the 9 region centres -> [..., 9]."""
    d2 = ((va.float().unsqueeze(-2) - va_centres(va.device)) ** 2).sum(-1)
    return torch.softmax(-d2 / (2 * sigma ** 2), -1)


@LOSSES.register("soft-prompt",
                 help="distance-aware soft prompts: KL(Gaussian soft labels over 3x3 VA regions || region logits)")
class SoftPrompt(nn.Module):
    """Region logits = scale x cosine(projected feature, region prototypes); KL to soft labels from the true VA."""

    def __init__(self, ctx: LossContext, prompts: str = "va9", sigma: PositiveFloat = 0.45, scale: PositiveFloat = 10.0,
                 templates: Annotated[int, Range(1, 1024)] = 3, target: str | None = None):
        super().__init__()
        self.out = _target(ctx, "reg", target, "soft-prompt")
        text = _text(ctx, prompts, "soft-prompt")
        if text.shape[0] != 9 * templates:
            raise ValueError(f"loss soft-prompt: prompt set {prompts!r} has {text.shape[0]} prompts, "
                             f"expected 9 regions x {templates} templates")
        self.register_buffer("proto", text.view(9, templates, -1).mean(1), persistent=False)
        self.proj = nn.Linear(ctx.feat_dim, text.shape[1])
        self.sigma, self.scale = float(sigma), float(scale)

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        f, va, m = _frames(out, y, self.out.key)
        va = torch.where(m.unsqueeze(-1), va.float(), 0.0)
        logits = self.scale * F.normalize(self.proj(f.float()), dim=-1) @ F.normalize(self.proto, dim=-1).T
        soft = soft_region_labels(va, self.sigma)
        kl = F.kl_div(torch.log_softmax(logits, -1), soft, reduction="none").sum(-1)
        return masked_mean(kl, m)


@LOSSES.register("distill", help="soft targets of finished runs (--distill-from, or teacher=) where ground truth is "
                                  "missing: KL at a temperature (classes), mse or ccc (values, reg=), BCE on "
                                  "probabilities (multi-label); weights = {output: weight}")
class Distill(nn.Module):
    """Match teacher runs' per-frame outputs on frames whose own label is missing, each output by its kind, weighted
    per output; teachers are mapped onto the task's outputs by output key."""

    covers_unlabelled = True
    REG = ("mse", "ccc")

    def __init__(self, ctx: LossContext, teacher: Any = None, temperature: PositiveFloat = 2.5,
                 reg: Literal["mse", "ccc"] = "mse", weights: Any = None):
        super().__init__()
        runs = ([teacher] if isinstance(teacher, str) else list(teacher)) if teacher else list(ctx.distill_from)
        if not runs:
            raise ValueError("loss distill: no teacher; give --distill-from RUN[,RUN] or distill(teacher='runs/t')")
        if ctx.teacher is None:
            raise ValueError("loss distill: no teacher predictions available in this context")
        if reg not in self.REG:
            raise ValueError(f"loss distill: reg must be one of {', '.join(self.REG)}, not {reg!r}")
        self.preds = ctx.teacher(runs[0] if len(runs) == 1 else tuple(runs))
        w = _output_weights(weights, ctx.outputs)
        self.outs = [o for o in ctx.outputs if o.key in self.preds and w[o.key] > 0]
        if not self.outs:
            raise ValueError(f"loss distill: teacher {', '.join(map(str, runs))} predicts {', '.join(self.preds)}; "
                             f"task {ctx.task} needs {', '.join(o.key for o in ctx.outputs)} (with weight > 0)")
        self.T, self.reg, self.w = float(temperature), reg, w

    def forward(self, out: dict, y: dict) -> torch.Tensor:
        idx, real = y["_idx"], y["_real"]
        total = out[self.outs[0].key].sum() * 0.0
        for o in self.outs:
            m = y[f"mask_{o.key}"]
            if m.dim() > idx.dim():
                m = m.all(-1)
            use = real & ~m
            t, s = self.preds[o.key][idx].float(), out[o.key].float()
            if o.kind == "class":
                tl = torch.log(t.clamp_min(1e-8)) / self.T
                v = F.kl_div(torch.log_softmax(s / self.T, -1), torch.softmax(tl, -1), reduction="none").sum(-1)
                v = masked_mean(v * self.T ** 2, use)
            elif o.kind == "multilabel":
                v = masked_mean(F.binary_cross_entropy_with_logits(s, t.clamp(0, 1), reduction="none").mean(-1), use)
            elif self.reg == "ccc":
                u = use.unsqueeze(-1).expand_as(s)
                v = (1 - ccc_per_dim(s, t, u)).mean() * use.any()
            else:
                v = masked_mean(((s - t) ** 2).mean(-1), use)
            total = total + self.w[o.key] * v
        return total


def _output_weights(spec: Any, outputs: tuple[Output, ...]) -> dict[str, float]:
    """Per-output weights from None (all 1), one number, a list in output order or {output key: weight} (others 1)."""
    keys = [o.key for o in outputs]
    if spec is None:
        return dict.fromkeys(keys, 1.0)
    if isinstance(spec, dict):
        bad = [k for k in spec if k not in keys]
        if bad:
            raise ValueError(f"loss distill: weights name {bad[0]!r}; outputs: {', '.join(keys)}")
        return {k: float(spec.get(k, 1.0)) for k in keys}
    vals = list(spec) if isinstance(spec, (list, tuple)) else [spec] * len(keys)
    if len(vals) != len(keys):
        raise ValueError(f"loss distill: {len(vals)} weights given, outputs are {', '.join(keys)}")
    return {k: float(v) for k, v in zip(keys, vals)}


class LossSum(nn.Module):
    """Weighted sum of loss terms; `forward` returns the total and each term's value."""

    def __init__(self, terms: list[tuple[float, str, nn.Module]]):
        super().__init__()
        self.weights = [w for w, _, _ in terms]
        self.names = [n for _, n, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])

    def forward(self, out: dict, y: dict) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = None, {}
        for w, n, m in zip(self.weights, self.names, self.terms):
            v = m(out, y)
            parts[n] = v.detach()
            total = w * v if total is None else total + w * v
        return total, parts


def build_loss(text: str, ctx: LossContext) -> LossSum:
    """Parse a loss string ('auto' = the task default) into a LossSum; unknown names/options are refused."""
    text = get_task(ctx.task).default_loss if text in ("", "auto", None) else text
    terms = []
    for w, p in check_loss(text):
        name = p.name if p.name not in [n for _, n, _ in terms] else f"{p.name}#{len(terms)}"
        terms.append((w, name, LOSSES.build(p.name, ctx, **p.opts)))
    return LossSum(terms)


def check_loss(text: str) -> list[tuple[float, PartSpec]]:
    """Parse a loss sum and check every term's name and options against LOSSES ('auto' passes)."""
    if text in ("", "auto", None):
        return []
    terms = parse_loss(text)
    for _, p in terms:
        LOSSES.check(p.name, p.opts)
    return terms
