"""Lab 6's checkers: ELECTRA's sampled corruption, replaced-token labels and discriminator loss."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..config import IGNORE_INDEX
from ..hf import to_hf
from ..masking import mask_tokens
from ..variants.electra import MASKING, ElectraConfig, ElectraForPreTraining, ElectraPretraining
from .core import Check, as_tensor, diagnose, quiet_transformers, rate_ok, same, show


def check_generator_sample(fn: Callable) -> None:
    """ELECTRA's corruption: ``fn(input_ids, labels, generator_logits)`` returns a copy of
    ``input_ids`` where each masked position (``labels != -100``) holds a token *sampled* from
    ``softmax(generator_logits)``; row ``r`` of ``generator_logits`` (``(n_masked, vocab)``) belongs to
    the ``r``-th masked position in row-major order, as ``input_ids[labels != -100]`` lists them.
    Other positions are unchanged, and so is ``input_ids``. Checked for placement, for the sampled
    frequencies over 4,000 positions (against the probabilities ``bertmini``'s
    ``ElectraPretraining`` samples from) and with no masked position at all."""
    check = Check("check_generator_sample", fn)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 12, (2, 10), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    spots = [(0, 1), (0, 4), (1, 0), (1, 5), (1, 9)]
    for r, c in spots:
        labels[r, c] = ids[r, c]
        ids[r, c] = 4  # [MASK]
    targets = torch.tensor([0, 1, 2, 3, 6])
    logits = torch.full((5, 12), -30.0)
    logits[torch.arange(5), targets] = 30.0
    want = ids.clone()
    want[labels != IGNORE_INDEX] = targets
    got = _sampled(check, "five masked positions, each with one certain token", ids, labels, logits)
    check.expect(same(got, want), "five masked positions, each with one certain token", show(want), show(got),
                 "put row r of the samples at the r-th masked position: corrupted[labels != -100] = samples")
    shares = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0]
    probs = torch.tensor(shares)
    ids = torch.randint(0, 6, (100, 100), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.4, ids, torch.full_like(ids, IGNORE_INDEX))
    n = int((labels != IGNORE_INDEX).sum())
    logits = probs.clamp(min=1e-12).log().expand(n, 6).clone()
    torch.manual_seed(0)
    got = _sampled(check, f"{n} masked positions sampled from {shares}", ids, labels, logits)
    drawn = got[labels != IGNORE_INDEX]
    freq = torch.bincount(drawn.clamp(0, 5), minlength=6)
    for token, p in enumerate(shares):
        hint = ("sample from the softmax (torch.multinomial(logits.softmax(-1), 1)); the argmax would always give "
                "the most likely token" if freq[0] == n else "sample from softmax(generator_logits)")
        check.expect(rate_ok(int(freq[token]), n, p), f"{n} positions sampled from probabilities {shares}",
                     f"token {token} about {p:.0%} of the time", f"{int(freq[token]) / n:.1%}", hint)
    ids = torch.randint(5, 12, (2, 6), generator=g)
    got = _sampled(check, "no masked position", ids, torch.full_like(ids, IGNORE_INDEX), torch.zeros(0, 12))
    check.expect(same(got, ids), "no masked position", show(ids), show(got),
                 "with nothing masked, return the input unchanged")
    check.passed(f"sampled shares {[round(int(f) / n, 3) for f in freq]} for probabilities {shares}")


def _sampled(check: Check, case, ids, labels, logits) -> torch.Tensor:
    __tracebackhide__ = True
    before = ids.clone()
    got = check.call(case, ids, labels.clone(), logits.clone())
    as_tensor(check, case, got, "the corrupted ids", ids.shape, "return a tensor shaped like input_ids")
    check.expect(same(ids, before), case, "input_ids unchanged", "input_ids was modified",
                 "corrupted = input_ids.clone(), then fill in the samples")
    unmasked = labels == IGNORE_INDEX
    check.expect(bool((got[unmasked] == ids[unmasked]).all()), case, "unmasked positions unchanged", show(got),
                 "replace only the positions where labels != -100")
    return got


def _electra_pair(seed: int):
    """A tiny bertmini ELECTRA pair (vocabulary of 12, so samples often equal the original) and a masked batch."""
    torch.manual_seed(seed)
    config = ElectraConfig(vocab_size=12, embedding_size=8, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    pair = ElectraPretraining(config).eval()
    ids = torch.randint(5, 12, (4, 16))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS], [SEP]
    special = (ids == 2) | (ids == 3)
    inputs, labels = mask_tokens(ids, mask_token_id=4, vocab_size=12, special_tokens_mask=special,
                                 **{**MASKING, "mlm_probability": 0.4})
    return pair, inputs, labels


def check_replaced_labels(fn: Callable) -> None:
    """ELECTRA's discriminator labels: ``fn(input_ids, labels, corrupted_ids)`` returns a 0/1 tensor of
    ``input_ids``' shape, 1 where ``corrupted_ids`` differs from the ORIGINAL token and 0 elsewhere;
    the original is ``labels`` at masked positions (``labels != -100``) and ``input_ids`` elsewhere. A
    sample equal to the original is 0 ("replaced only if changed"). Checked on hand-made edge cases
    and against ``bertmini``'s ``ElectraPretraining`` (its ``replaced``) on tiny models."""
    check = Check("check_replaced_labels", fn)
    M = 4  # [MASK]
    ids = torch.tensor([[2, 7, M, 9, M, 8, 3, 0]])
    labels = torch.tensor([[-100, -100, 6, -100, 10, 8, -100, -100]])
    corrupted = torch.tensor([[2, 7, 6, 9, 11, 5, 3, 0]])
    kept = corrupted.clone()
    kept[0, 5] = 8
    cases = [("a kept (not [MASK]ed) position whose sample is the original", ids, labels, kept,
              torch.tensor([[0, 0, 0, 0, 1, 0, 0, 0]])),
             ("a [MASK] sampled back to its original, one sampled to another token, a kept token replaced",
              ids, labels, corrupted, torch.tensor([[0, 0, 0, 0, 1, 1, 0, 0]]))]
    for seed in range(6):
        pair, inputs, masked = _electra_pair(seed)
        with torch.no_grad():
            out = pair(inputs, labels=masked)
        cases.append((f"bertmini's ElectraPretraining, seed {seed}", inputs, masked, out.corrupted_ids, out.replaced))
    for what, ids, labels, corrupted, want in cases:
        case = f"{what}; input_ids {show(ids[0], 60)}, labels {show(labels[0], 60)}, corrupted {show(corrupted[0], 60)}"
        got = check.call(case, ids.clone(), labels.clone(), corrupted.clone())
        as_tensor(check, case, got, "the labels", ids.shape, "return one 0/1 label per token")
        hint = diagnose(got, {
            "compare with the ORIGINAL token (labels at masked positions), not with the masked input: a [MASK] "
            "the generator turned back into the original word counts as original (0)":
                lambda: (corrupted != ids).long(),
            "a masked position is replaced only if the sample CHANGED the token":
                lambda: (labels != IGNORE_INDEX).long()}, "original = torch.where(labels == -100, input_ids, "
                                                          "labels); replaced = (corrupted_ids != original)")
        check.expect(same(got.long(), want.long()), case, f"{show(want)}  (bertmini's ElectraPretraining)",
                     show(got), hint)
    check.passed("equal to bertmini's ElectraPretraining on six tiny models and the edge cases")


def check_discriminator_loss(fn: Callable) -> None:
    """ELECTRA's discriminator loss: ``fn(logits, labels, attention_mask)`` returns the mean binary
    cross-entropy (with logits) of the per-token ``logits`` ``(batch, seq)`` against the 0/1
    ``labels`` (integers), over the positions where ``attention_mask`` is 1 (all positions if it is
    None). Checked against ``transformers``' ``ElectraForPreTraining`` loss (and bertmini's) on a
    tiny model's logits, padded and not: values and gradients."""
    check = Check("check_discriminator_loss", fn)
    g = torch.Generator().manual_seed(0)
    for seed in range(4):
        torch.manual_seed(seed)
        ours = ElectraForPreTraining(ElectraConfig(vocab_size=20, embedding_size=8, hidden_size=16,
                                                   num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=32, max_position_embeddings=16)).eval()
        for p in ours.parameters():
            torch.nn.init.normal_(p, std=0.5)
        with quiet_transformers():
            theirs = to_hf(ours).eval()
        ids = torch.randint(5, 20, (3, 9), generator=g)
        labels = torch.randint(0, 2, (3, 9), generator=g)
        for what, mask in (("3 rows padded to 9, 6 and 3 tokens", torch.tensor([[1] * 9, [1] * 6 + [0] * 3,
                                                                                [1] * 3 + [0] * 6])),
                           ("no attention_mask (None)", None)):
            case = f"tiny ELECTRA discriminator, seed {seed}, {what}"
            _check_one_disc_loss(check, case, ours, theirs, ids, labels, mask)
    check.passed("values and gradients equal transformers' ElectraForPreTraining loss")


def _check_one_disc_loss(check: Check, case, ours, theirs, ids, labels, mask) -> None:
    __tracebackhide__ = True
    with torch.no_grad():
        hf_out = theirs(ids, attention_mask=mask, labels=labels)
        our_loss = ours(ids, attention_mask=mask, labels=labels).loss
    logits = hf_out.logits.detach().clone().requires_grad_(True)
    real = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    expected = F.binary_cross_entropy_with_logits(logits[real], labels[real].float())
    want_grad, = torch.autograd.grad(expected, logits)
    x = logits.detach().clone().requires_grad_(True)
    got = check.call(case, x, labels.clone(), None if mask is None else mask.clone(),
                     hint="binary_cross_entropy_with_logits needs float targets: labels.float()")
    check.expect(isinstance(got, torch.Tensor) and got.numel() == 1 and got.requires_grad, case,
                 "a scalar tensor that carries gradients", show(got), "return the tensor the loss function gives")
    z, y = logits.detach(), labels.float()
    hint = diagnose(got.detach().reshape(()), {
        "leave the padding out: average over the positions where attention_mask == 1":
            lambda: F.binary_cross_entropy_with_logits(z, y),
        "the loss is the MEAN over the real positions, not the sum":
            lambda: F.binary_cross_entropy_with_logits(z[real], y[real], reduction="sum"),
        "the logits are raw scores: binary_cross_entropy_WITH_LOGITS applies the sigmoid itself":
            lambda: F.binary_cross_entropy_with_logits(z[real].sigmoid(), y[real]),
    }, "F.binary_cross_entropy_with_logits(logits[real], labels[real].float()), real = attention_mask == 1")
    check.expect(math.isclose(got.item(), hf_out.loss.item(), rel_tol=1e-5, abs_tol=1e-6), case,
                 f"{hf_out.loss.item():.6f}  (transformers' ElectraForPreTraining; bertmini's: {our_loss.item():.6f})",
                 f"{got.item():.6f}", hint)
    got_grad, = torch.autograd.grad(got, x)
    check.expect(torch.allclose(got_grad, want_grad, atol=1e-6, rtol=1e-4), case + " (the gradient)",
                 f"d loss / d logits = {show(want_grad)}", show(got_grad),
                 "compute the loss from logits with torch operations only, so autograd can follow it")
