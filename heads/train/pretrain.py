"""Self-supervised pretraining of a head's encoder (per-modality projection + temporal head) on unlabelled features.

Methods are registered parts (heads.train.ssl_methods: simclr, byol, masked) so runs and grids pick them by name.
Views of a window come from the cache's stored augmentations (`extract --views K --augment`) where present, and
from feature-space augmentations (frame masking, noise, temporal crop, modality dropout). The emotion-aware variant
adds positives: windows of the same pseudo-class (k-means over the current encoder's embeddings, refreshed each
epoch) and/or of the same nearest CLIP-text expression prompt. The encoder's weights are the very modules
`train-head` builds, so `--init-from` loads them into a head.
"""
from __future__ import annotations

from collections.abc import Callable

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from affcli.common.device import autocast
from affcli.heads.train.ssl_methods import build_method, check_method
from affcli.heads.model.head import HeadModel
from affcli.heads.data.windows import Windows, sample_batches

ENCODER_KEYS = ("proj.", "temporal.", "mask_token.")
ENCODER_SPEC = ("d_model", "temporal", "temporal_options", "temporal_on", "causal", "standardize")
OLD_ENCODER = {"standardize": False}  # what an encoder record written before a key existed had


@dataclass
class ViewAug:
    """Feature-space augmentations of one view: frame-mask fraction, noise (x feature std), temporal crop
    (shortest kept fraction of the window), probability of dropping one modality (with two or more)."""

    mask: float = 0.15
    noise: float = 0.1
    crop: float = 0.6
    modality_drop: float = 0.2


class Encoder(nn.Module):
    """A head's projection, mask token and temporal head per modality; pooled = masked time-mean, modalities joined."""

    def __init__(self, model: HeadModel):
        super().__init__()
        self.modalities = list(model.modalities)
        self.proj, self.mask_token, self.temporal = model.proj, model.mask_token, model.temporal
        self.out_dim = sum(model.temporal[m].out_dim for m in self.modalities)

    def sequence(self, xs: dict, vs: dict, drop: dict | None = None) -> dict[str, torch.Tensor]:
        """{m: [B, W, H]}; frames in `drop[m]` become the mask token before the temporal head."""
        out = {}
        for m in self.modalities:
            h = self.proj[m](xs[m], vs.get(m))
            if drop is not None and m in drop:
                h = torch.where(drop[m].unsqueeze(-1), self.mask_token[m].to(h.dtype), h)
            out[m] = self.temporal[m](h, vs[m])
        return out

    def forward(self, xs: dict, vs: dict, drop: dict | None = None) -> torch.Tensor:
        """[B, sum H]: each modality's mean over its valid frames (zeros where it has none)."""
        seq = self.sequence(xs, vs, drop)
        pooled = []
        for m in self.modalities:
            w = vs[m].unsqueeze(-1).to(seq[m].dtype)
            pooled.append((seq[m] * w).sum(1) / w.sum(1).clamp_min(1))
        return torch.cat(pooled, -1).float()

    def parameters_list(self) -> list[nn.Parameter]:
        """Everything pretraining updates."""
        return [p for m in self.modalities for p in (*self.proj[m].parameters(), *self.temporal[m].parameters(),
                                                     self.mask_token[m])]


# ---- views and positives ------------------------------------------------------------------------------------------

def _gather(feats: dict, valid: dict, views: dict, win: Windows, rows: torch.Tensor, gen: torch.Generator | None,
            pick_view: bool) -> tuple[dict, dict]:
    """[B, W, D] features of windows `rows`; with stored views, each window reads a random one of (original, views)."""
    idx, real = win.idx[rows], win.real[rows]
    xs, vs = {}, {}
    for m, f in feats.items():
        ok = valid[m][idx] & real
        if pick_view and m in views:
            stack = views[m]
            k = torch.randint(0, stack.shape[0], (len(rows),), generator=gen).to(idx.device)
            x = stack[k[:, None], idx]
        else:
            x = f[idx]
        xs[m] = torch.where(ok.unsqueeze(-1), x.float(), 0.0)
        vs[m] = ok
    return xs, vs


def feature_view(xs: dict, vs: dict, aug: ViewAug, scale: dict) -> tuple[dict, dict]:
    """One feature-space view: noise, frame masking (zeroed and invalid), a random temporal crop, modality dropout."""
    dev = next(iter(xs.values())).device
    b, w = next(iter(vs.values())).shape
    keep = torch.ones(b, w, dtype=torch.bool, device=dev)
    if w > 1 and aug.crop < 1:
        length = (w * (aug.crop + (1 - aug.crop) * torch.rand(b, device=dev))).ceil().clamp(1, w)
        start = ((w - length) * torch.rand(b, device=dev)).floor()
        t = torch.arange(w, device=dev)[None]
        keep = (t >= start[:, None]) & (t < (start + length)[:, None])
    if w > 1 and aug.mask > 0:
        keep &= torch.rand(b, w, device=dev) >= aug.mask
    mods = list(xs)
    gone = torch.full((b,), -1, device=dev)
    if len(mods) > 1 and aug.modality_drop > 0:
        gone = torch.where(torch.rand(b, device=dev) < aug.modality_drop,
                           torch.randint(0, len(mods), (b,), device=dev), gone)
    out_x, out_v = {}, {}
    for i, m in enumerate(mods):
        v = vs[m] & keep & (gone != i)[:, None]
        x = xs[m] + aug.noise * scale[m] * torch.randn_like(xs[m])
        out_x[m] = torch.where(v.unsqueeze(-1), x, 0.0)
        out_v[m] = v
    return out_x, out_v


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 25) -> torch.Tensor:
    """Cluster ids [N] of [N, D] rows: batched k-means (k-means++ seeding from a seeded generator), cosine geometry."""
    x = F.normalize(x.float(), dim=-1)
    g = torch.Generator(device="cpu").manual_seed(seed)
    k = min(k, len(x))
    centres = x[torch.randint(0, len(x), (1,), generator=g).to(x.device)]
    for _ in range(1, k):
        d = (1 - x @ centres.T).min(1).values.clamp_min(0).cpu()
        p = d / d.sum() if float(d.sum()) > 0 else torch.full_like(d, 1 / len(d))
        centres = torch.cat([centres, x[torch.multinomial(p, 1, generator=g).to(x.device)]])
    for _ in range(iters):
        ids = (x @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, ids, x)
        counts = torch.bincount(ids, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, F.normalize(sums, dim=-1), centres)
    return (x @ centres.T).argmax(1)


def text_classes(feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Nearest prompt (cosine) of each row's features: the CLIP zero-shot class, [N]."""
    if feats.shape[1] != text.shape[1]:
        raise ValueError(f"text positives: prompt embeddings have dim {text.shape[1]}, the visual features "
                         f"{feats.shape[1]}; they need the CLIP backbone that encoded the prompts")
    return (F.normalize(feats.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T).argmax(1)


# ---- the loop -----------------------------------------------------------------------------------------------------

@dataclass
class SSLInputs:
    """What pretraining reads: per-modality features [T, D] and validity [T], stored views [K, T, D] (may be empty),
    the windows to train on, and the prompt embeddings [P, D_visual] for text positives (None if unused)."""

    feats: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    views: dict[str, torch.Tensor]
    win: Windows
    text: torch.Tensor | None = None


def _window_means(inp: SSLInputs, modality: str, rows: torch.Tensor) -> torch.Tensor:
    idx, real = inp.win.idx[rows], inp.win.real[rows]
    ok = (inp.valid[modality][idx] & real).unsqueeze(-1).float()
    return (inp.feats[modality][idx].float() * ok).sum(1) / ok.sum(1).clamp_min(1)


@torch.no_grad()
def _embed_all(meth: nn.Module, enc: Encoder, inp: SSLInputs, batch: int) -> torch.Tensor:
    enc.eval()
    meth.eval()
    out = []
    for rows in sample_batches(len(inp.win), batch, torch.Generator(), inp.win.idx.device, shuffle=False):
        out.append(meth.embed(enc, *_gather(inp.feats, inp.valid, {}, inp.win, rows, None, False)).float())
    enc.train()
    meth.train()
    return torch.cat(out)


def fit_encoder(model: HeadModel, inp: SSLInputs, method: str = "simclr", positives: str = "none", *, epochs: int = 10,
                batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-2, seed: int = 0, amp: bool = True,
                clusters: int = 8, aug: ViewAug | None = None, grad_clip: float = 1.0,
                positives_from: float = 0.5, on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Pretrain `model`'s encoder in place with a registered method; returns the mean loss of each epoch.

    Pseudo-class positives join after `positives_from` of the epochs (k-means on a random encoder's embeddings
    would group by nuisance, and the positives would then teach it)."""
    check_method(method, positives)
    if positives in ("text", "both") and inp.text is None:
        raise ValueError("text positives need prompt text embeddings in the cache (a clip:* backbone's prompt set)")
    device = inp.win.idx.device
    torch.manual_seed(seed)
    enc = Encoder(model)
    meth = build_method(method, enc.out_dim)
    if hasattr(meth, "bind"):
        meth.bind(enc, {m: int(f.shape[1]) for m, f in inp.feats.items()})
    meth.to(device)
    params = enc.parameters_list() + [p for p in meth.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed + 1)
    aug = aug or ViewAug()
    scale = {m: f[inp.valid[m]].float().std().clamp_min(1e-6) if bool(inp.valid[m].any()) else torch.ones((), device=device)
             for m, f in inp.feats.items()}
    vis = "visual" if "visual" in inp.feats else next(iter(inp.feats))
    all_rows = torch.arange(len(inp.win), device=device)
    text_ids = text_classes(_window_means(inp, vis, all_rows), inp.text.to(device)) \
        if positives in ("text", "both") else None
    history: list[float] = []
    model.train()
    for epoch in range(epochs):
        use_pos = epoch >= int(positives_from * epochs)
        cluster_ids = kmeans(_embed_all(meth, enc, inp, max(batch_size, 512)), clusters, seed + epoch) \
            if positives in ("kmeans", "both") and use_pos else None
        total, n = torch.zeros((), device=device), 0
        for rows in sample_batches(len(inp.win), batch_size, gen, device):
            if len(rows) < 2:
                continue
            pos = None
            if cluster_ids is not None:
                pos = cluster_ids[rows][:, None] == cluster_ids[rows][None]
            if text_ids is not None and use_pos:
                t = text_ids[rows][:, None] == text_ids[rows][None]
                pos = t if pos is None else pos & t
            x = _gather(inp.feats, inp.valid, inp.views, inp.win, rows, gen, False)
            batch = {"x": x, "pos": pos}
            if meth.contrastive:
                batch["a"] = feature_view(*_gather(inp.feats, inp.valid, inp.views, inp.win, rows, gen, True), aug, scale)
                batch["b"] = feature_view(*_gather(inp.feats, inp.valid, inp.views, inp.win, rows, gen, True), aug, scale)
            with autocast(device, amp):
                loss = meth(enc, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip or 1.0)
            opt.step()
            meth.after_step(enc)
            total += loss.detach()
            n += 1
        history.append(float(total) / max(1, n))
        if not math.isfinite(history[-1]):
            raise FloatingPointError(f"pretraining ({method}) loss is {history[-1]} at epoch {epoch + 1}; lower the lr")
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
    return history


# ---- transfer into train-head ------------------------------------------------------------------------------------

def encoder_state(model: HeadModel) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a head's state dict (what a pretraining run saves)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(ENCODER_KEYS)}


def encoder_record(model: HeadModel) -> dict[str, Any]:
    """What must agree for pretrained weights to load: input widths and the encoder's spec fields."""
    spec = model.spec.to_dict()
    return {"in_dims": dict(model.in_dims), **{k: spec[k] for k in ENCODER_SPEC}}


def freeze_encoder(model: HeadModel) -> HeadModel:
    """Stop the encoder's gradients: only fusion and task head train (a linear probe when the task head is linear)."""
    for k, p in model.named_parameters():
        if k.startswith(ENCODER_KEYS):
            p.requires_grad_(False)
    return model


def init_encoder(model: HeadModel, run_dir: str) -> HeadModel:
    """Load a pretraining run's encoder weights into `model` (which must match its widths and encoder spec)."""
    from pathlib import Path

    from affcli.common.checkpoint import CheckpointError, read_checkpoint

    path = Path(run_dir) / ENCODER_FILE
    if not path.exists():
        raise FileNotFoundError(f"init-from {run_dir}: no {ENCODER_FILE} (is it an `affcli pretrain` run?)")
    meta, state = read_checkpoint(path, "encoder")
    want, have = {**OLD_ENCODER, **meta["encoder"]}, encoder_record(model)
    for k in have:
        if want.get(k) != have[k]:
            raise ValueError(f"init-from {run_dir}: its encoder has {k} = {want.get(k)!r}, this run {have[k]!r}; "
                             f"give the same --{k.replace('_', '-')} (or features) as the pretraining run")
    own = model.state_dict()
    bad = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if bad:
        raise CheckpointError(path, f"encoder weight {bad[0]!r} does not fit this head")
    model.load_state_dict(state, strict=False)
    return model


ENCODER_FILE = "encoder.safetensors"
