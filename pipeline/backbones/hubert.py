"""HuBERT hidden states (~50 Hz), chunked and aligned to video frames like Wav2Vec2.

Spec forms after `hubert:`: a hub name (`facebook/hubert-large-ll60k`, `facebook/hubert-base-ls960`), a local
`save_pretrained` folder, or `tiny` (random weights from `configs/hubert-tiny.json`); option `layer`.
"""
from __future__ import annotations

import torch

from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.speech import SpeechSSLBackbone


@BACKBONES.register("hubert", modality="audio", example="hubert:facebook/hubert-large-ll60k",
                    help="HuBERT hidden states: hub name, local folder, tiny; layer=last|mean|K")
class HubertBackbone(SpeechSSLBackbone):
    """HubertModel hidden states at ~50 Hz; one pass per 20 s chunk (2 s overlap), batched."""

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, layer: int | str = "last"):
        super().__init__(spec, device, seed)
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

        self._setup(spec, seed, layer, HubertModel, HubertConfig, Wav2Vec2FeatureExtractor, "hubert-tiny.json")
