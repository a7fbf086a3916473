"""Scaled dot-product attention and BERT's multi-head self-attention.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V        (Vaswani et al., 2017)

BERT's attention is *bidirectional*: every token may look at every other
token, left and right. The only mask it uses hides padding, so that a batch
of sentences of different lengths gives each sentence the result it would get
alone. A causal mask (GPT's) is here for the chapter to compare with.

Two paths compute the same numbers:

* the fast path calls ``torch.nn.functional.scaled_dot_product_attention``,
  which fuses the matmuls and the softmax and never stores the ``seq x seq``
  probabilities;
* the explicit path (:func:`scaled_dot_product_attention` below, used when
  ``output_attentions=True``) writes the formula out and returns the
  probabilities, for reading and plotting. It also serves a CPU under bf16/fp16
  autocast or with attention dropout, where the fused kernel is the slower of the
  two (measured on the book's 2-core machine, forward + backward, batch 32: bf16,
  9.5 ms against 2.7 ms at 2 heads x 64 tokens and 46 ms against 12 ms at 4 heads
  x 128; fp32 with dropout 0.1, 51 ms against 34 ms; in fp32 without dropout the
  fused kernel wins).

Not handled: cross-attention, key/value caches, relative position schemes and
head masking; bertmini is an encoder.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a ``(batch, seq)`` mask of 1 (real token) / 0 (padding) into an *additive*
    mask of shape ``(batch, 1, 1, seq)``: 0 where a key may be attended to, a very
    large negative number where it is padding.

    Adding it to the scores before the softmax gives padding keys a weight of
    (numerically) zero. The most negative finite value is used rather than
    ``-inf`` so that a row with no real key at all gives a uniform row, not NaN.
    The shape broadcasts over heads (dim 1) and over queries (dim 2): padding
    *queries* still compute an output, which nobody reads.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got shape {tuple(attention_mask.shape)}")
    keep = attention_mask[:, None, None, :].to(torch.bool)
    mask = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~keep, torch.finfo(dtype).min)


def as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean keep-mask (True = may attend) as an additive mask in ``dtype``; an
    additive mask is just cast. Built in the dtype of the scores so that under
    bf16/fp16 autocast the "very negative" value stays finite."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask.to(dtype)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1 / (1 - p)``.

    The same as ``F.dropout(x, p)`` (which CUDA runs as one fused kernel, so it is used
    there). On a CPU the random draw is the slow part: torch's generator is serial, and
    ``bernoulli_`` spends one draw per element. Here one 64-bit draw gives four
    uniform 16-bit integers, and an element is kept when its integer is at least
    ``p`` of the way up the int16 range (``p`` rounded to 1/65536). Measured on the
    book's 2-core machine for a 32 x 128 x 256 tensor: 1.4 ms for the draw, against
    4.3 ms for one 16-bit draw per element and 6.1 ms for ``bernoulli_``.
    """
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
    """``nn.Dropout`` through :func:`dropout`: active in training mode only."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def causal_mask(seq_len: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """GPT's mask, for comparison: query ``i`` may see keys ``0..i`` only. Shape ``(seq, seq)``,
    additive like :func:`padding_mask`. BERT never uses it."""
    future = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(seq_len, seq_len, dtype=dtype, device=device).masked_fill(future, torch.finfo(dtype).min)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The formula, written out. ``query/key/value`` are ``(..., seq, d_k)``; ``mask`` is
    additive and broadcastable to ``(..., seq_q, seq_k)``.

    Returns ``(output, probabilities)``; the probabilities are those *before*
    dropout, so every row sums to 1.
    """
    d_k = query.size(-1)
    scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        scores = scores + mask
    # The softmax in float32 even under bf16/fp16 autocast (which would run it in bf16 on a
    # CPU, with 3 significant digits), as the fused kernels do internally.
    probs = scores.float().softmax(dim=-1).to(value.dtype)
    weights = dropout(probs, dropout_p)
    return weights @ value, probs


class BertSelfAttention(nn.Module):
    """Multi-head self-attention: project to queries, keys and values, split the
    hidden size into ``num_attention_heads`` heads of ``head_dim`` each, attend in
    every head independently, and concatenate the heads again.

    The output projection and the residual connection live in ``BertSelfOutput``
    (``model.py``), as in ``transformers``, so that parameter names match.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, seq, hidden)`` -> ``(batch, heads, seq, head_dim)``."""
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_attention_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden_states`` is ``(batch, seq, hidden)``; ``mask`` is ``None`` when
        nothing is padded, else broadcastable to ``(batch, heads, seq, seq)``: either
        boolean (True = may attend, as ``BertModel`` passes it) or additive (as from
        :func:`padding_mask`). Returns the concatenated heads ``(batch, seq, hidden)`` and,
        if asked, the probabilities ``(batch, heads, seq, seq)``."""
        # The three projections as one matmul (hidden -> 3 x hidden): the same numbers as
        # self.query/key/value(hidden_states), and a wider product runs faster on a CPU
        # (forward + backward at 4096 tokens x 256: 28 ms against 35 ms for three).
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = (self.split_heads(t) for t in F.linear(hidden_states, weight, bias).chunk(3, dim=-1))
        dropout_p = self.dropout_p if self.training else 0.0
        if mask is not None:
            mask = as_additive(mask, q.dtype)
        # On a CPU the written-out formula beats the fused kernel under bf16/fp16 and with
        # attention dropout (which sends the fused call to its unfused fallback anyway).
        if output_attentions or (q.device.type == "cpu" and (dropout_p > 0 or q.dtype != torch.float32)):
            context, probs = scaled_dot_product_attention(q, k, v, mask, dropout_p)
            probs = probs if output_attentions else None
        else:
            # Fused kernel; with mask=None it may pick a flash/efficient kernel.
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            probs = None
        batch, _, seq, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, seq, self.num_attention_heads * self.head_dim)
        return context, probs
