"""Scaled dot-product attention and BERT's multi-head self-attention.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V        (Vaswani et al., 2017)

BERT's attention is *bidirectional*: every token may look at every other
token, left and right. The only mask it uses hides padding, so that a batch
of sentences of different lengths gives each sentence the result it would get
alone. A causal mask (GPT's) is here for the chapter to compare with.

This module is the plain version: three projections, the formula, the heads merged
again. To train fast, :mod:`bertmini.fast.attention` computes the same numbers with one
fused projection and, where it is faster, ``torch.nn.functional.scaled_dot_product_attention``
(which never stores the ``seq x seq`` probabilities); ``BertSelfAttention.forward`` chooses
it while ``bertmini.fast.ENABLED`` is True, unless the probabilities are asked for.

Not handled: cross-attention, key/value caches, relative position schemes and
head masking; bertmini is an encoder.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import fast
from .config import BertConfig
from .fast.attention import fast_self_attention


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
    dropout: Callable[[torch.Tensor, float], torch.Tensor] = F.dropout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The formula, written out. ``query/key/value`` are ``(..., seq, d_k)``;
    ``mask`` is additive and broadcastable to ``(..., seq_q, seq_k)``;
    ``dropout(x, p)`` drops attention weights (``bertmini.fast`` passes its
    faster CPU twin).

    Returns ``(output, probabilities)``; the probabilities are those *before*
    dropout, so every row sums to 1.
    """
    d_k = query.size(-1)
    scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        scores = scores + mask
    # The softmax in float32 even under bf16/fp16 autocast (which would run it
    # in bf16 on a CPU, with 3 significant digits), as fused kernels do inside.
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
        x = x.view(batch, seq, self.num_attention_heads, self.head_dim)
        return x.transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, heads, seq, head_dim)`` -> ``(batch, seq, hidden)``: the
        heads side by side."""
        batch, _, seq, _ = x.shape
        hidden = self.num_attention_heads * self.head_dim
        return x.transpose(1, 2).reshape(batch, seq, hidden)

    def forward(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden_states`` is ``(batch, seq, hidden)``; ``mask`` is ``None``
        when nothing is padded, else broadcastable to ``(batch, heads, seq,
        seq)``: boolean (True = may attend, as ``BertModel`` passes it) or
        additive (as from :func:`padding_mask`). Returns the concatenated
        heads ``(batch, seq, hidden)`` and, if asked, the probabilities
        ``(batch, heads, seq, seq)``."""
        if fast.ENABLED and not output_attentions:  # fast twin, same numbers
            return fast_self_attention(self, hidden_states, mask), None
        q = self.split_heads(self.query(hidden_states))
        k = self.split_heads(self.key(hidden_states))
        v = self.split_heads(self.value(hidden_states))
        if mask is not None:
            mask = as_additive(mask, q.dtype)
        dropout_p = self.dropout_p if self.training else 0.0
        context, probs = scaled_dot_product_attention(q, k, v, mask, dropout_p)
        return self.merge_heads(context), (probs if output_attentions else None)
