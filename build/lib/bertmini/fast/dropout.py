"""Dropout with a cheaper random draw on a CPU: the twin of ``F.dropout`` in distribution.

On a CPU the random draw is the slow part of dropout: torch's generator is serial and
``bernoulli_`` spends one draw per element. Here one 64-bit draw gives four uniform
16-bit integers, and an element is kept when its integer is at least ``p`` of the way
up the int16 range (``p`` rounded to 1/65536). On CUDA, ``F.dropout`` is one fused
kernel and is used as it is. ``tests/test_fast.py`` checks the keep rate, the scaling
and the independence of neighbouring elements against ``F.dropout``;
``bench/mlm_throughput.py`` times it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``."""
    if p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    uniform16 = words.view(torch.int16)[:n].view(x.shape)  # each value of [-32768, 32767] equally likely
    keep = uniform16 >= round(p * (1 << 16)) - (1 << 15)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """``nn.Dropout`` through :func:`dropout` while ``bertmini.fast.ENABLED``: active in training mode only."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from bertmini import fast

        if not self.training:
            return x
        return dropout(x, self.p) if fast.ENABLED else F.dropout(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
