"""WavLM hidden states (~50 Hz; the ABAW VA/AU winners' audio), chunked and aligned to video frames like Wav2Vec2.

Spec forms after `wavlm:`: a hub name (`microsoft/wavlm-large`, `microsoft/wavlm-base-plus`), a local
`save_pretrained` folder, or `tiny` (random weights from `configs/wavlm-tiny.json`); option `layer`.
"""
from __future__ import annotations

import torch

from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.speech import SpeechSSLBackbone


@BACKBONES.register("wavlm", modality="audio", example="wavlm:microsoft/wavlm-large",
                    help="WavLM hidden states: hub name, local folder, tiny; layer=last|mean|K")
class WavLMBackbone(SpeechSSLBackbone):
    """WavLMModel hidden states at ~50 Hz; one pass per 20 s chunk (2 s overlap), batched."""

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, layer: int | str = "last"):
        super().__init__(spec, device, seed)
        from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

        self._setup(spec, seed, layer, WavLMModel, WavLMConfig, Wav2Vec2FeatureExtractor, "wavlm-tiny.json")
