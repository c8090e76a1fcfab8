"""Frame-by-frame inference of a causal `last`-position head: a ring buffer holds the last window's features.

Each `step` runs the head once on the window that ends at the newest frame, built exactly as the offline window
(heads.windows + gather: same padding, validity and dtype), so step e equals the offline prediction of row e + H.
The backbone features of a frame enter the buffer once; only the (small) head reruns per frame. A GRU's state is
not carried across windows on purpose: offline windows start from zero state W frames back, and so does this.
"""
from __future__ import annotations

import numpy as np
import torch

from affcli.common.device import autocast
from affcli.heads.model.head import HeadModel
from affcli.heads.tasks import to_prediction


def check_streamable(model: HeadModel, where: str = "run") -> None:
    """Refuse a head that looks at frames after t or predicts every frame of a window (one-line ValueError)."""
    if model.spec.label_position != "last" or not model.causal:
        raise ValueError(f"{where} is not causal (label_position={model.spec.label_position}, causal={model.causal}); "
                         f"stream serves heads trained with --causal --label-position last [--horizon H]")


class OnlineHead:
    """Ring buffer of the last (W-1)*dilation+1 frames per modality; `step` returns the forecast for frame e + horizon."""

    def __init__(self, model: HeadModel, window: int, amp: bool = True, where: str = "run"):
        check_streamable(model, where)
        if window < 1:
            raise ValueError(f"{where}: window must be >= 1, not {window}")
        self.model, self.window, self.amp = model.eval(), int(window), bool(amp)
        self.device = next(model.parameters()).device
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.horizon, self.dilation = int(model.spec.horizon), int(model.spec.dilation)
        self.span = (self.window - 1) * self.dilation + 1
        self.back = torch.arange(self.window - 1, -1, -1, device=self.device) * self.dilation
        self.buf = {m: torch.zeros(self.span, d, dtype=self.dtype, device=self.device) for m, d in model.in_dims.items()
                    if m in model.modalities}
        self.ok = {m: torch.zeros(self.span, dtype=torch.bool, device=self.device) for m in self.buf}
        self.n = 0

    def reset(self) -> None:
        """Forget every frame (a new video)."""
        for m in self.buf:
            self.buf[m].zero_()
            self.ok[m].zero_()
        self.n = 0

    @torch.no_grad()
    def step(self, feats: dict[str, np.ndarray | torch.Tensor], valid: dict[str, bool]) -> dict[str, np.ndarray]:
        """Add frame e's features ({modality: [D]}) and validity; return {output key: prediction [k]} for e + horizon."""
        slot = self.n % self.span
        for m in self.buf:
            if m not in feats:
                raise ValueError(f"online head: no {m} features given for frame {self.n} (needs {', '.join(self.buf)})")
            x = torch.as_tensor(np.asarray(feats[m]) if not isinstance(feats[m], torch.Tensor) else feats[m])
            ok = bool(valid.get(m, True))
            self.buf[m][slot] = torch.nan_to_num(x.to(self.device, self.dtype)) if ok else 0
            self.ok[m][slot] = ok
        pos = self.n - self.back
        real = pos >= 0
        slots = pos.remainder(self.span)
        xs, vs = {}, {}
        for m in self.buf:
            v = self.ok[m][slots] & real
            xs[m] = torch.where(v.unsqueeze(-1), self.buf[m][slots], 0.0).unsqueeze(0)
            vs[m] = v.unsqueeze(0)
        self.n += 1
        with autocast(self.device, self.amp):
            out = self.model(xs, vs, real.unsqueeze(0))
        return {o.key: to_prediction(o.key, o.kind, out[o.key]).reshape(o.dim).float().cpu().numpy()
                for o in self.model.outputs}
