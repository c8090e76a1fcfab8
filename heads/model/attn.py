"""Multi-head attention with key-validity and causal masks that never yields NaN (fully masked rows stay finite)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_bias(q_len: int, key_valid: torch.Tensor | None, causal: bool, dtype: torch.dtype,
                   device: torch.device, k_len: int | None = None) -> torch.Tensor | None:
    """Additive bias [B or 1, 1, Q, K]: large negatives (never -inf) on invalid keys and, stronger, on future keys.

    Future keys get the stronger bias so a query whose past keys are all invalid still never sees the future.
    """
    k_len = k_len or (key_valid.shape[1] if key_valid is not None else q_len)
    if key_valid is None and not causal:
        return None
    lo = torch.finfo(dtype).min
    rows = key_valid.shape[0] if key_valid is not None else 1
    bias = torch.zeros(rows, 1, q_len, k_len, dtype=dtype, device=device)
    if key_valid is not None:
        bias = bias.masked_fill((~key_valid)[:, None, None, :], lo / 2)
    if causal:
        bias = bias.masked_fill(torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu(1), lo)
    return bias


class MHA(nn.Module):
    """Queries from x, keys/values from y; [B, Q, D] x [B, K, D] -> [B, Q, D]."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.q, self.kv, self.o = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def _kpos(self, pos: torch.Tensor) -> torch.Tensor:
        """Positions through the key projection (no bias), so q.k sees (x + p) . (y + p)."""
        w = self.kv.weight[: pos.shape[1]]
        return pos.to(w.dtype) @ w.T

    def forward(self, x: torch.Tensor, y: torch.Tensor, key_valid: torch.Tensor | None = None,
                causal: bool = False, pos: torch.Tensor | None = None) -> torch.Tensor:
        """`pos` ([W, D], optional) is added to queries and keys only, so attention can align frames in time."""
        B, Q, D = x.shape
        h = self.heads
        q = self.q(x if pos is None else x + pos[:Q].to(x.dtype)).view(B, Q, h, D // h).transpose(1, 2)
        kv = self.kv(y).view(B, y.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        if pos is not None:
            k = k + self._kpos(pos[: y.shape[1]]).to(k.dtype).view(1, y.shape[1], h, D // h).transpose(1, 2)
        bias = attention_bias(Q, key_valid, causal, q.dtype, x.device, y.shape[1])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, Q, D))
