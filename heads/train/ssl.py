"""The self-supervised stage of a train-head run: encoder weights from `--init-from`, then `--ssl-epochs` of a
registered method (heads/pretrain.py: masked-frame reconstruction, SimCLR, BYOL, emotion-aware positives) on the
train split's windows, then `--freeze-encoder`."""
from __future__ import annotations

import torch

from affcli.heads.data.dataset import Data
from affcli.heads.model.head import HeadModel
from affcli.heads.train.pretrain import SSLInputs, fit_encoder, freeze_encoder, init_encoder
from affcli.heads.data.windows import Windows


def stored_views(cache: str | None, features: list[str], modality_of: dict[str, str], videos: list[str],
                 device: torch.device) -> dict[str, torch.Tensor]:
    """{modality: [K, T, D]} from the cache's stored augmented views, for modalities whose every feature set has them
    with the same K (its feature sets concatenated, as in Data); {} without a cache."""
    if not cache:
        return {}
    from affcli.cache.rows import load_views

    out: dict[str, torch.Tensor] = {}
    for m in dict.fromkeys(modality_of[f] for f in features):
        parts = [load_views(cache, f, videos) for f in features if modality_of[f] == m]
        if parts and all(p is not None for p in parts) and len({p.shape[0] for p in parts}) == 1:
            out[m] = torch.cat(parts, -1).to(device)
    return out


def prompt_embeddings(text: dict[str, torch.Tensor], name: str | None) -> torch.Tensor | None:
    """The prompt set `name` (default: lsd6, then expr8, when present) for text positives."""
    for n in ([name] if name else ["lsd6", "expr8"]):
        if n in text:
            return text[n]
    return None


def pretrain(model: HeadModel, data: Data, win: Windows, cfg) -> list[float]:
    """Init, self-supervise and/or freeze `model`'s encoder as `cfg` asks; returns the self-supervised epoch losses."""
    if cfg.init_from:
        init_encoder(model, cfg.init_from)
    history: list[float] = []
    if cfg.ssl_epochs > 0:
        from affcli.cache.store import FeatureStore

        modality_of = FeatureStore(cfg.cache, mode="r").modalities(data.features) if cfg.cache else {}
        views = stored_views(cfg.cache, data.features, modality_of, data.videos, data.device) if modality_of else {}
        inp = SSLInputs(data.modalities, data.valid, views, win, prompt_embeddings(data.text, cfg.prompts))
        history = fit_encoder(model, inp, cfg.ssl_method, cfg.ssl_positives, epochs=cfg.ssl_epochs,
                              batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                              amp=cfg.amp, grad_clip=cfg.grad_clip)
    if cfg.freeze_encoder:
        freeze_encoder(model)
    return history
