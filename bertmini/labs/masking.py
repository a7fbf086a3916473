"""Lab 2's checkers: which positions BERT predicts, and BERT's 15% / 80-10-10 masking."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import IGNORE_INDEX
from .core import Check, as_tensor, bert_tokenizer, hf_tokenizer, rate_ok, same, show, wiki_texts


def _masking_batch():
    """64 real Wikipedia sentences as padded ids with the real vocabulary: ``(tokenizer, ids, special)``."""
    bert = bert_tokenizer()
    batch = bert.encode_batch(wiki_texts(64), max_length=64, truncation=True)
    return bert, batch["input_ids"], batch["special_tokens_mask"].bool()


def check_selection(fn: Callable) -> None:
    """Which positions BERT predicts: ``fn(special_tokens_mask, mlm_probability, generator)``
    returns a boolean tensor of the mask's shape, True at the selected positions: each position
    where ``special_tokens_mask`` is False is selected with probability ``mlm_probability``
    (independently, or exactly that share of each row); special positions and padding never.
    Every draw comes from ``generator``, so the same seed gives the same selection."""
    check = Check("check_selection", fn)
    _, ids, special = _masking_batch()
    eligible = ~special

    def select(case, p, seed, mask=special):
        got = check.call(case, mask.clone(), p, torch.Generator().manual_seed(seed))
        got = as_tensor(check, case, got, "the selection", mask.shape,
                         "return a boolean tensor with the shape of special_tokens_mask")
        check.expect(got.dtype == torch.bool or bool(((got == 0) | (got == 1)).all()), case,
                     "True/False (or 1/0) values", show(got), "compare uniform draws with p: `draws < p`")
        return got.bool()

    total = chosen = 0
    for seed in range(20):
        case = f"64 Wikipedia sentences, mlm_probability=0.15, generator seed {seed}"
        got = select(case, 0.15, seed)
        check.expect(not bool((got & special).any()), case, "no special position or padding selected",
                     f"{int((got & special).sum())} selected at special positions or padding",
                     "select only where special_tokens_mask is False: `... & ~special_tokens_mask`")
        again = select(case + " (called again with the same seed)", 0.15, seed)
        check.expect(same(again, got), case + ", called twice", "the same selection both times",
                     "a different selection", "draw with the generator you are given: "
                     "torch.rand(shape, generator=generator)")
        total, chosen = total + int(eligible.sum()), chosen + int(got.sum())
    check.expect(rate_ok(chosen, total, 0.15), f"20 batches at mlm_probability=0.15 ({total:,} eligible tokens)",
                 "about 15.0% of the eligible tokens selected", f"{chosen / total:.2%}",
                 "select each eligible position with probability mlm_probability")
    for p in (0.0, 0.5, 1.0):
        case = f"mlm_probability={p}"
        got = select(case, p, 7)
        want = {0.0: "nothing selected", 1.0: "every eligible position selected"}.get(p, "about half selected")
        ok = rate_ok(int(got.sum()), int(eligible.sum()), p) and not bool((got & special).any())
        check.expect(ok, case, want, f"{int(got.sum())} of {int(eligible.sum())} eligible positions",
                     "select with `torch.rand(..., generator=generator) < mlm_probability`, never at specials")
    first = torch.zeros_like(eligible)
    first[:, : eligible.shape[1] // 2] = True
    picks = [select(f"seed {s}", 0.15, 100 + s) for s in range(10)]
    front = sum(int((g & first).sum()) for g in picks) / max(1, 10 * int((eligible & first).sum()))
    back = sum(int((g & ~first).sum()) for g in picks) / max(1, 10 * int((eligible & ~first).sum()))
    check.expect(abs(front - back) < 0.05, "selection rates in the first and second half of each row",
                 "the same rate everywhere in the row", f"{front:.1%} in the first half, {back:.1%} in the second",
                 "every eligible position has the same chance, wherever it is in the row")
    check.passed(f"{chosen / total:.2%} of {total:,} eligible tokens selected at 0.15")


def check_mask_tokens(fn: Callable) -> None:
    """BERT's masking, ``bertmini.masking.mask_tokens``' contract. ``fn`` is called as
    ``fn(input_ids, mask_token_id=..., vocab_size=..., special_tokens_mask=...,
    mlm_probability=..., generator=...)`` and returns ``(inputs, labels)``: ``labels`` hold the
    original id at each selected position and -100 elsewhere; of the selected positions 80%
    become ``mask_token_id`` in ``inputs``, 10% a random id below ``vocab_size``, 10% keep their
    token; special positions and padding are never selected; ``input_ids`` is not modified.

    Checked on real Wikipedia sentences with the real vocabulary: the rules at every position,
    the rates over about 100,000 tokens (beside ``transformers``' ``DataCollatorForLanguageModeling``
    on the same batches), ``mlm_probability`` 0, 0.5 and 1, one unbatched sequence, and that the
    same generator seed gives the same result."""
    check = Check("check_mask_tokens", fn)
    bert, ids, special = _masking_batch()
    mask_id, vocab_size = bert.mask_token_id, len(bert)
    counts = dict(eligible=0, selected=0, masked=0, random=0, kept=0)
    randoms = []
    for seed in range(24):
        inputs, labels = _masked(check, f"64 Wikipedia sentences, mlm_probability=0.15, seed {seed}",
                                 ids, special, mask_id, vocab_size, 0.15, seed)
        if seed == 0:
            again = _masked(check, "the same, called again with seed 0", ids, special, mask_id,
                            vocab_size, 0.15, 0)
            check.expect(same(again[0], inputs) and same(again[1], labels), "two calls with seed 0",
                         "the same (inputs, labels) both times", "different results", "draw with the generator "
                         "you are given (torch.rand(..., generator=generator), torch.randint(..., generator=...))")
        _count_masking(counts, randoms, ids, special, inputs, labels, mask_id)
    _check_rates(check, counts, randoms, vocab_size)
    for p in (0.0, 0.5, 1.0):
        inputs, labels = _masked(check, f"mlm_probability={p}", ids, special, mask_id, vocab_size, p, 99)
        n, chosen = int((~special).sum()), int((labels != IGNORE_INDEX).sum())
        check.expect(rate_ok(chosen, n, p), f"mlm_probability={p}", f"about {p:.0%} of {n} eligible tokens selected",
                     f"{chosen} selected", "select each eligible position with probability mlm_probability")
    row = ids[0, : int((~special[0]).sum()) + 2]
    _masked(check, "one sequence, not a batch: input_ids of shape (seq_len,)", row, special[0, : len(row)],
            mask_id, vocab_size, 0.15, 5)
    detail = ", ".join(f"{k} {v}" for k, v in _hf_masking_rates(ids, special).items())
    check.passed(f"selected {counts['selected'] / counts['eligible']:.1%}, of them "
                 f"{counts['masked'] / counts['selected']:.1%} [MASK], {counts['random'] / counts['selected']:.1%} "
                 f"random, {counts['kept'] / counts['selected']:.1%} kept; transformers' collator on the same "
                 f"batches: {detail}")


def _masked(check: Check, case, ids, special, mask_id, vocab_size, p, seed):
    """Call the learner's masking once and check every position against the rules."""
    __tracebackhide__ = True
    original = ids.clone()
    got = check.call(case, ids, mask_token_id=mask_id, vocab_size=vocab_size,
                     special_tokens_mask=special.clone(), mlm_probability=p,
                     generator=torch.Generator().manual_seed(seed))
    check.expect(isinstance(got, (tuple, list)) and len(got) == 2, case, "a pair (inputs, labels)", show(got),
                 "return inputs, labels")
    inputs = as_tensor(check, case, got[0], "inputs", ids.shape, "inputs has the shape of input_ids")
    labels = as_tensor(check, case, got[1], "labels", ids.shape, "labels has the shape of input_ids")
    check.expect(same(ids, original), case, "input_ids unchanged after the call",
                 "input_ids was modified", "work on a copy: inputs = input_ids.clone()")
    selected = labels != IGNORE_INDEX
    check.expect(bool((labels[selected] == ids[selected]).all()), case,
                 "labels: the original id where selected, -100 elsewhere", show(labels),
                 "labels = torch.where(selected, input_ids, -100): -100 (not 0) where nothing is predicted")
    check.expect(not bool((selected & special).any()), case, "labels -100 at special positions and padding",
                 f"{int((selected & special).sum())} special or padding positions selected",
                 "never select where special_tokens_mask is True ([CLS], [SEP], [PAD])")
    check.expect(bool((inputs[~selected] == ids[~selected]).all()), case,
                 "inputs unchanged wherever labels are -100",
                 f"{int((inputs[~selected] != ids[~selected]).sum())} unselected positions changed",
                 "change only the selected positions; labels must be -100 exactly where inputs is left alone")
    check.expect(bool(((inputs >= 0) & (inputs < vocab_size)).all()), case, f"every id in [0, {vocab_size})",
                 show(inputs), "random replacements are torch.randint(vocab_size, ...)")
    return inputs, labels


def _count_masking(counts, randoms, ids, special, inputs, labels, mask_id) -> None:
    selected = labels != IGNORE_INDEX
    counts["eligible"] += int((~special).sum())
    counts["selected"] += int(selected.sum())
    counts["masked"] += int((selected & (inputs == mask_id)).sum())
    counts["kept"] += int((selected & (inputs == ids)).sum())
    changed = selected & (inputs != mask_id) & (inputs != ids)
    counts["random"] += int(changed.sum())
    randoms.append(inputs[changed])


def _check_rates(check: Check, c: dict, randoms, vocab_size: int) -> None:
    __tracebackhide__ = True
    where = f"24 batches at mlm_probability=0.15 ({c['eligible']:,} eligible tokens, {c['selected']:,} selected)"
    split = ("of the selected positions 80% become [MASK], 10% a random id, 10% keep their token: draw ONE "
             "uniform number u per position; u < 0.8 -> [MASK], 0.8 <= u < 0.9 -> random id, else keep")
    for key, p, hint in (("selected", 0.15, "select each eligible position with probability mlm_probability"),
                         ("masked", 0.8, split), ("random", 0.1, split), ("kept", 0.1, split)):
        n = c["eligible"] if key == "selected" else c["selected"]
        of = "eligible tokens" if key == "selected" else "selected tokens"
        check.expect(rate_ok(c[key], n, p), where, f"{key}: about {p:.0%} of the {of}",
                     f"{c[key] / max(n, 1):.2%}", hint)
    drawn = torch.cat(randoms)
    spread = drawn.unique().numel() / max(1, drawn.numel())
    check.expect(spread > 0.5, where, "random replacements spread over the vocabulary",
                 f"{drawn.unique().numel()} different ids among {drawn.numel()} replacements",
                 f"draw each replacement on its own: torch.randint({vocab_size}, (n,), generator=generator)")


def _hf_masking_rates(ids, special) -> dict[str, str]:
    """The same rates from transformers' DataCollatorForLanguageModeling on the same batches."""
    import transformers

    collator = transformers.DataCollatorForLanguageModeling(hf_tokenizer(), mlm_probability=0.15, seed=0)
    collator.generator = torch.Generator().manual_seed(0)  # torch_mask_tokens draws from it
    c = dict(eligible=0, selected=0, masked=0, random=0, kept=0)
    for _ in range(24):
        inputs, labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special.clone())
        _count_masking(c, [], ids, special, inputs, labels, bert_tokenizer().mask_token_id)
    return {"selected": f"{c['selected'] / c['eligible']:.1%}", "[MASK]": f"{c['masked'] / c['selected']:.1%}",
            "random": f"{c['random'] / c['selected']:.1%}", "kept": f"{c['kept'] / c['selected']:.1%}"}
