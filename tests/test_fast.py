"""bertmini.fast: every speed trick equals the plain version it stands in for."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from bertmini import fast
from bertmini.attention import BertSelfAttention, padding_mask
from bertmini.config import BertConfig
from bertmini.fast.dropout import Dropout, dropout
from bertmini.fast.mlm_loss import masked_lm_loss
from bertmini.heads import BertForPreTraining

torch.set_num_threads(1)

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=24)


@contextlib.contextmanager
def plain():
    """Every model on its plain path for the block."""
    fast.ENABLED = False
    try:
        yield
    finally:
        fast.ENABLED = True


# --------------------------------------------------------------------------- the blocked MLM loss


@pytest.mark.parametrize("rows,vocab,block", [(37, 1000, 128), (5, 64, 1024), (1, 300, 7)])
def test_blocked_mlm_loss_equals_cross_entropy_of_linear(rows, vocab, block):
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 16, generator=g, requires_grad=True)
    w = (torch.randn(vocab, 16, generator=g) * 2).requires_grad_()  # peaked softmax: the logsumexp must be exact
    b = torch.randn(vocab, generator=g).requires_grad_()
    y = torch.randint(0, vocab, (rows,), generator=g)
    y[0] = vocab - 1  # a label in the last, partial block
    loss, accuracy = masked_lm_loss(x, w, b, y, block=block)
    (loss * 3).backward()  # a non-unit upstream gradient
    mine = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    logits = F.linear(x, w, b)
    ref = F.cross_entropy(logits, y)
    (ref * 3).backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    assert float(accuracy) == float((logits.argmax(-1) == y).float().mean())
    for a, t in zip(mine, (x, w, b)):
        torch.testing.assert_close(a, t.grad, atol=1e-5, rtol=1e-4)


def _batch(seed=0, n=4, t=20):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, TINY["vocab_size"], (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 13:] = 0  # padding in the batch
    types = torch.zeros(n, t, dtype=torch.long)
    types[:, 10:] = 1
    labels = torch.where(torch.rand(n, t, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[mask == 0] = -100
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels,
                next_sentence_label=torch.tensor([0, 1, 1, 0]))


@pytest.mark.parametrize("amp", [False, True])
def test_a_training_step_is_the_same_on_the_fast_and_the_plain_path(amp):
    """The whole model, train mode, dropout off: loss and every gradient agree."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).train()
    batch, tol = _batch(), (3e-2 if amp else 1e-5)
    results = []
    for path in (contextlib.nullcontext, plain):
        model.zero_grad()
        with path(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(**batch)
        out.loss.backward()
        results.append((out, [p.grad.clone() for p in model.parameters()]))
    (fast_out, fast_grads), (plain_out, plain_grads) = results
    assert fast_out.mlm_logits is None and plain_out.mlm_logits is not None  # the fast loss stores no logits
    torch.testing.assert_close(fast_out.loss, plain_out.loss.float(), atol=tol, rtol=tol)
    assert all(g.abs().sum() > 0 for g in plain_grads[1:4])  # the comparison compares something
    for a, b in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize("masked", [False, True])
def test_fast_self_attention_equals_the_formula(masked):
    torch.manual_seed(1)
    attn = BertSelfAttention(BertConfig(**TINY, attention_probs_dropout_prob=0.0)).eval()
    x = torch.randn(3, 11, 32)
    mask = None
    if masked:
        m = torch.ones(3, 11, dtype=torch.long)
        m[0, 7:] = 0
        mask = padding_mask(m)
    fast_out, none = attn(x, mask)
    with plain():
        plain_out, _ = attn(x, mask)
    _, probs = attn(x, mask, output_attentions=True)  # asking for probabilities takes the plain path
    assert none is None and probs.shape == (3, 4, 11, 11)
    torch.testing.assert_close(fast_out, plain_out, atol=1e-6, rtol=1e-5)
    if masked:
        assert probs[0, :, :, 7:].abs().max() < 1e-6  # padding gets no weight


def test_fast_self_attention_under_bf16_takes_the_written_out_formula():
    torch.manual_seed(2)
    attn = BertSelfAttention(BertConfig(**TINY, attention_probs_dropout_prob=0.0)).eval()
    x = torch.randn(2, 9, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_out, _ = attn(x)
        with plain():
            plain_out, _ = attn(x)
    torch.testing.assert_close(fast_out.float(), plain_out.float(), atol=2e-2, rtol=2e-2)


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_is_inverted_dropout_at_rate_p_as_f_dropout(p):
    torch.manual_seed(0)
    x = torch.ones(200, 1000, requires_grad=True)
    y = dropout(x, p)
    kept = y != 0
    reference = F.dropout(torch.ones(200, 1000), p) != 0
    assert abs(kept.float().mean().item() - reference.float().mean().item()) < 0.007  # the same keep rate
    assert abs(1 - kept.float().mean().item() - p) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))  # survivors scaled as F.dropout does
    for lane in range(4):  # one 64-bit draw makes four neighbouring masks: each keeps at rate 1 - p
        assert abs(1 - kept.view(-1)[lane::4].float().mean().item() - p) < 0.01
    flat = kept.view(-1).float()  # neighbours independent: P(both kept) = (1 - p)^2
    assert abs((flat[:-1] * flat[1:]).mean().item() - (1 - p) ** 2) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask and scale
    torch.manual_seed(0)
    assert torch.equal(dropout(x, p), y)  # the global seed decides the mask, as for F.dropout
    assert dropout(x, 0.0) is x


def test_dropout_module_follows_the_switch_and_the_mode():
    layer = Dropout(0.5)
    x = torch.ones(64, 64)
    assert torch.equal(layer.eval()(x), x)
    layer.train()
    torch.manual_seed(0)
    fast_y = layer(x)
    with plain():
        torch.manual_seed(0)
        plain_y = layer(x)
        torch.manual_seed(0)
        assert torch.equal(plain_y, F.dropout(x, 0.5))
    assert not torch.equal(fast_y, plain_y)  # two different draws, one distribution
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
