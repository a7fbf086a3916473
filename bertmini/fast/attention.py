"""Multi-head self-attention, fast: the twin of ``BertSelfAttention``'s plain forward.

Two changes, the same numbers (``tests/test_fast.py``):

* the three projections as one matmul (hidden -> 3 x hidden): a wider product runs
  faster on a CPU than three narrow ones (three calls when they are int8-quantised modules);
* the attention itself through ``F.scaled_dot_product_attention`` (fused, never stores
  the probabilities), except on a CPU under bf16/fp16 autocast or with attention
  dropout, where the formula written out is the faster of the two (with the softmax in
  float32, and :func:`bertmini.fast.dropout.dropout`). ``bench/`` measures both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import dropout


def fast_self_attention(attn, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """What ``attn(hidden_states, mask)[0]`` computes, for a ``BertSelfAttention`` ``attn``."""
    from ..attention import as_additive, scaled_dot_product_attention

    if isinstance(attn.query, nn.Linear):
        weight = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])
        bias = torch.cat([attn.query.bias, attn.key.bias, attn.value.bias])
        q, k, v = (attn.split_heads(t) for t in F.linear(hidden_states, weight, bias).chunk(3, dim=-1))
    else:  # int8 projections (torch.ao.quantization.quantize_dynamic) have no float weight to concatenate
        q, k, v = (attn.split_heads(proj(hidden_states)) for proj in (attn.query, attn.key, attn.value))
    dropout_p = attn.dropout_p if attn.training else 0.0
    if mask is not None:
        mask = as_additive(mask, q.dtype)
    if q.device.type == "cpu" and (dropout_p > 0 or q.dtype != torch.float32):
        context, _ = scaled_dot_product_attention(q, k, v, mask, dropout_p, dropout=dropout)
    else:  # with mask=None the fused call may pick a flash/efficient kernel
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return attn.merge_heads(context)
