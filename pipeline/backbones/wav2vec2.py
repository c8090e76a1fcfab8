"""Wav2Vec2 hidden states (~50 Hz) over long overlapping chunks, aligned to video frames (speech.py does the work).

Spec forms after `wav2vec2:`: a hub name (`facebook/wav2vec2-base`), a local `save_pretrained` folder,
or `tiny` (random weights from `configs/wav2vec2-tiny.json`, the default 7-layer conv stack: 50 Hz); option
`layer` (`last`, `mean` or an index), e.g. `wav2vec2:facebook/wav2vec2-base(layer=6)`.
"""
from __future__ import annotations

import torch

from affcli.pipeline.backbones.hub import load_pretrained
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.speech import SpeechSSLBackbone, receptive_field

__all__ = ["Wav2Vec2Backbone", "load_pretrained", "receptive_field"]


@BACKBONES.register("wav2vec2", modality="audio", example="wav2vec2:facebook/wav2vec2-base",
                    help="Wav2Vec2 hidden states: hub name, local folder, tiny; layer=last|mean|K")
class Wav2Vec2Backbone(SpeechSSLBackbone):
    """Wav2Vec2Model hidden states at ~50 Hz; one pass per 20 s chunk (2 s overlap), batched."""

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, layer: int | str = "last"):
        super().__init__(spec, device, seed)
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        self._setup(spec, seed, layer, Wav2Vec2Model, Wav2Vec2Config, Wav2Vec2FeatureExtractor, "wav2vec2-tiny.json")
