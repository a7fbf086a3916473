"""Lab 3's checkers: scaled dot-product attention and one encoder layer with MiniLM's weights."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..attention import causal_mask, padding_mask, scaled_dot_product_attention
from .. import data
from ..config import BertConfig
from ..hf import load_pretrained
from ..model import BertLayer
from .core import Check, as_tensor, bert_tokenizer, diagnose, quiet_transformers, same, show, wiki_texts


def check_attention(fn: Callable) -> None:
    """Scaled dot-product attention: ``fn(query, key, value, mask=None)`` with ``(..., seq, d_k)``
    tensors (the value's last size may differ) and an additive ``mask`` broadcastable to
    ``(..., seq_q, seq_k)``, as ``bertmini.attention.scaled_dot_product_attention``; returns the
    output, or ``(output, probabilities)``. Checked against
    ``torch.nn.functional.scaled_dot_product_attention`` (and the probabilities against bertmini's)
    on unbatched, batched and multi-head shapes, ``d_k`` 1 to 64, with no mask, a padding mask
    and a causal mask; the inputs must come back unchanged."""
    check = Check("check_attention", fn)
    g = torch.Generator().manual_seed(0)
    shapes = [  # (query, key, value) shapes
        ((5, 8), (5, 8), (5, 8)), ((1, 4), (1, 4), (1, 4)), ((2, 7, 16), (2, 7, 16), (2, 7, 16)),
        ((2, 3, 6, 4), (2, 3, 6, 4), (2, 3, 6, 4)), ((2, 12, 9, 32), (2, 12, 9, 32), (2, 12, 9, 32)),
        ((3, 2, 4, 1), (3, 2, 4, 1), (3, 2, 4, 1)), ((2, 2, 3, 8), (2, 2, 6, 8), (2, 2, 6, 5)),
        ((1, 1, 10, 64), (1, 1, 10, 64), (1, 1, 10, 64)),
    ]
    for q_shape, k_shape, v_shape in shapes:
        q, k, v = (torch.randn(s, generator=g) * 2 for s in (q_shape, k_shape, v_shape))
        masks = {"no mask": None, "a padding mask": _padding_mask_for(k_shape, q.dim(), g)}
        if q_shape[-2] == k_shape[-2]:
            masks["a causal mask"] = causal_mask(q_shape[-2])
        for name, mask in masks.items():
            case = f"query {q_shape}, key {k_shape}, value {v_shape}, {name}"
            expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            probs = scaled_dot_product_attention(q, k, v, mask)[1]
            args = (q.clone(), k.clone(), v.clone()) + (() if mask is None else (mask.clone(),))
            got = check.call(case, *args)
            check.expect(all(same(a, b) for a, b in zip(args, (q, k, v, mask))), case,
                         "query, key, value and mask unchanged", "an input was modified",
                         "no in-place operations on the inputs (q /= ..., mask += ...): make new tensors")
            out, got_probs = (got[0], got[1]) if isinstance(got, (tuple, list)) else (got, None)
            as_tensor(check, case, out, "the output", expected.shape,
                       "the output is weights @ value: (..., seq_q, d_v)")
            hint = diagnose(out, _attention_mistakes(q, k, v, mask), "compare your scores, then your "
                             "weights, with softmax(q @ k^T / sqrt(d_k) + mask) step by step")
            check.expect(torch.allclose(out, expected, atol=1e-5, rtol=1e-4), case,
                         f"{show(expected)}  (torch.nn.functional.scaled_dot_product_attention)", show(out), hint)
            if got_probs is not None:
                as_tensor(check, case, got_probs, "the probabilities", probs.shape,
                           "the probabilities are (..., seq_q, seq_k), one row per query")
                check.expect(torch.allclose(got_probs, probs, atol=1e-5, rtol=1e-4), case,
                             f"probabilities {show(probs)}  (bertmini)", show(got_probs),
                             "return the softmax weights (before they multiply the values)")
    check.passed("equal to torch.nn.functional.scaled_dot_product_attention")


def _padding_mask_for(k_shape, dims: int, g: torch.Generator) -> torch.Tensor:
    """An additive padding mask over the keys: the last keys of each row hidden (at least one kept)."""
    seq_k = k_shape[-2]
    batch = k_shape[0] if dims >= 3 else 1
    lengths = torch.randint(1, seq_k + 1, (batch,), generator=g)
    lengths[0] = max(1, seq_k - 1)
    mask = padding_mask(torch.arange(seq_k)[None, :] < lengths[:, None])  # (batch, 1, 1, seq_k)
    return mask.reshape((batch,) + (1,) * (dims - 2) + (seq_k,)) if dims >= 3 else mask.reshape(1, seq_k)


def _attention_mistakes(q, k, v, mask) -> dict[str, Callable[[], torch.Tensor]]:
    def attend(scale, dim=-1, use_mask=True):
        scores = q @ k.transpose(-2, -1) * scale
        if use_mask and mask is not None:
            scores = scores + mask
        return scores.softmax(dim) @ v

    d_k = q.shape[-1]
    return {
        "divide the scores by sqrt(d_k): the dot products grow with d_k": lambda: attend(1.0),
        "divide by the SQUARE ROOT of d_k (math.sqrt(d_k)), not d_k": lambda: attend(1 / d_k),
        "softmax over the LAST dimension (the keys): each query's weights sum to 1": lambda: attend(
            1 / math.sqrt(d_k), dim=-2),
        "add the mask to the scores before the softmax": lambda: attend(1 / math.sqrt(d_k), use_mask=False),
    }


def _minilm_layers():
    """bertmini's MiniLM, transformers' MiniLM (eager attention) and a real padded batch's embeddings."""
    from transformers import BertModel

    ours = load_pretrained(data.minilm_path()).eval()
    with quiet_transformers():
        theirs = BertModel.from_pretrained(str(data.minilm_path()), attn_implementation="eager",
                                           local_files_only=True).eval()
    batch = bert_tokenizer().encode_batch([t.split(". ")[0][:160] for t in wiki_texts(3)])
    with torch.no_grad():
        hidden = ours.embeddings(batch["input_ids"], batch["token_type_ids"])
    return ours, theirs, hidden, batch["attention_mask"]


def check_encoder_layer(fn: Callable) -> None:
    """One post-LN encoder layer: ``fn(hidden_states, weights, num_heads, mask=None)`` with
    ``hidden_states`` of shape ``(batch, seq, hidden)``, ``weights`` a dict of the layer's tensors
    under ``transformers``' names (``attention.self.query.weight``, ... ``output.LayerNorm.bias``),
    and an additive ``mask`` broadcastable to ``(batch, heads, seq, seq)``; LayerNorm's epsilon is
    1e-12 and the activation the exact (erf) GELU, as in BERT. Returns ``(batch, seq, hidden)``.

    Checked on the six layers of the real all-MiniLM-L6-v2 (12 heads of 32) on real sentences,
    with and without a padding mask, against ``transformers``' ``BertLayer`` loaded with the same
    weights, and on a random 4-head layer. Padded positions are not compared."""
    from transformers.models.bert.modeling_bert import BertLayer as HFBertLayer

    check = Check("check_encoder_layer", fn)
    ours, theirs, hidden, attention_mask = _minilm_layers()
    heads = ours.config.num_attention_heads
    mask = padding_mask(attention_mask)
    worst = 0.0
    for k, (layer, reference) in enumerate(zip(ours.encoder.layer, theirs.encoder.layer)):
        n = int(attention_mask[0].sum())
        for name, x, m, real in (("one unpadded sentence, no mask", hidden[:1, :n], None, None),
                                 ("3 padded sentences, a padding mask", hidden, mask, attention_mask.bool())):
            case = f"all-MiniLM-L6-v2 layer {k} (real weights), {name}"
            worst = max(worst, _check_layer(check, case, layer, reference, x, heads, m, real))
        with torch.no_grad():
            hidden = layer(hidden, mask)[0]  # the next layer reads real hidden states
    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_attention_heads=4, intermediate_size=24, vocab_size=10)
    layer = BertLayer(config).eval()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    reference = HFBertLayer(config.to_hf(attn_implementation="eager")).eval()
    reference.load_state_dict(layer.state_dict())
    lengths = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    _check_layer(check, "a random layer: hidden 16, 4 heads, intermediate 24, padded", layer, reference,
                 torch.randn(2, 5, 16), 4, padding_mask(lengths), lengths.bool())
    check.passed(f"MiniLM's six layers equal transformers' BertLayer to {worst:.1e}")


def _check_layer(check: Check, case, layer, reference, x, heads, mask, real) -> float:
    """One layer: the learner's function against transformers' BertLayer with the same weights."""
    __tracebackhide__ = True
    weights = {name: t.detach().clone() for name, t in layer.state_dict().items()}
    with torch.no_grad():
        expected = reference(x, attention_mask=mask)
        expected = expected[0] if isinstance(expected, tuple) else expected
        got = check.call(case, x.clone(), weights, heads, *(() if mask is None else (mask,)))
    as_tensor(check, case, got, "the layer's output", x.shape, "return the layer's output, (batch, seq, hidden)")
    keep = torch.ones(x.shape[:2], dtype=torch.bool) if real is None else real
    error = float((got - expected)[keep].abs().max())
    hint = diagnose(got[keep], _layer_mistakes(layer, x, heads, mask, keep), "check each sublayer in order: "
                     "attention, dense, add & LayerNorm, then intermediate (GELU), dense, add & LayerNorm")
    check.expect(error < 1e-4, case, f"{show(expected[keep])}  (transformers' BertLayer, the same weights)",
                 f"{show(got[keep])}, max |difference| {error:.1e}", hint)
    return error


def _layer_mistakes(layer, x, heads, mask, keep) -> dict[str, Callable[[], torch.Tensor]]:
    """The usual mistakes, each computed by bertmini's BertLayer with one thing changed."""
    hidden, inner = layer.attention.self.query.weight.shape[0], layer.intermediate.dense.weight.shape[0]

    def variant(**change):
        config = BertConfig(**{"hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": inner,
                               "vocab_size": 8, **change})
        other = type(layer)(config).eval()
        other.load_state_dict(layer.state_dict())
        with torch.no_grad():
            return other(x, mask)[0][keep]

    def part(name):
        with torch.no_grad():
            return (layer(x, None) if name == "no mask" else layer.attention(x, mask))[0][keep]

    return {
        "the output is the attention sublayer's alone: add the feed-forward sublayer "
        "(intermediate.dense, GELU, output.dense, add & output.LayerNorm)": lambda: part("attention"),
        "use the mask: add it to the attention scores of every head": lambda: part("no mask"),
        "BERT's GELU is the exact one, F.gelu(x), not approximate='tanh'": lambda: variant(hidden_act="gelu_new"),
        "the activation is GELU, not ReLU": lambda: variant(hidden_act="relu"),
        f"split the hidden size into num_heads heads of {hidden // heads}: "
        "view(batch, seq, heads, d_k).transpose(1, 2)": lambda: variant(num_attention_heads=1),
    }
