"""Lab 4's checkers: the masked-LM loss at the masked positions and next-sentence pairs."""
from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import IGNORE_INDEX, BertConfig
from ..hf import to_hf
from ..heads import BertForMaskedLM, BertForPreTrainingOutput, masked_lm
from ..nsp import IS_NEXT, NOT_NEXT, make_nsp_pairs
from .core import Check, diagnose, quiet_transformers, rate_ok, show


def check_mlm_loss(fn: Callable) -> None:
    """The masked-LM loss: ``fn(sequence_output, labels, predictions)`` returns a scalar tensor,
    the mean cross-entropy of the vocabulary scores at the positions where ``labels != -100``
    (at least one position is). ``sequence_output`` is the encoder's ``(batch, seq, hidden)``;
    ``predictions`` is the MLM head, bertmini's or ``transformers``' ``cls.predictions``: both have
    ``transform``, ``decoder.weight`` (the word embeddings, tied) and ``bias``, and calling
    ``predictions(h)`` scores ``h``. The loss must carry gradients back to ``sequence_output``.

    Checked on two random models against ``transformers``' ``BertForMaskedLM`` loss (cross-entropy
    of its head's scores, -100 ignored) and bertmini's ``heads.masked_lm``: values and gradients."""
    check = Check("check_mlm_loss", fn)
    g = torch.Generator().manual_seed(0)
    for vocab, hidden in ((40, 16), (97, 24)):
        torch.manual_seed(vocab)
        model = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=32)).eval()
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.3)  # scores far from uniform, so mistakes show
        with quiet_transformers():
            theirs = to_hf(model).eval()
        for head_name, head in (("bertmini's", model.cls.predictions), ("transformers'", theirs.cls.predictions)):
            for what, labels in _mlm_label_cases(vocab, g):
                case = f"vocab {vocab}, hidden {hidden}, {head_name} cls.predictions, {what}"
                _check_one_mlm_loss(check, case, head, theirs, labels, hidden, g)
    check.passed("values and gradients equal transformers' BertForMaskedLM loss")


def _mlm_label_cases(vocab: int, g: torch.Generator):
    def labels(shape, share):
        ids = torch.randint(vocab, shape, generator=g)
        chosen = torch.rand(shape, generator=g) < share
        chosen.view(-1)[0] = True
        return torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))

    edges = torch.full((2, 6), IGNORE_INDEX)
    edges[0, 1], edges[1, 4] = 0, vocab - 1
    yield "about 15% of 3 x 12 positions masked", labels((3, 12), 0.15)
    yield "one masked position in 2 x 9", labels((2, 9), 0.0)
    yield "every position of 2 x 5 masked", labels((2, 5), 1.0)
    yield "labels 0 and vocab_size - 1 (the first and last ids)", edges
    yield "one sequence of one token", labels((1, 1), 1.0)


def _check_one_mlm_loss(check: Check, case, head, theirs, labels, hidden, g) -> None:
    __tracebackhide__ = True
    x = torch.randn(*labels.shape, hidden, generator=g, requires_grad=True)
    scores = theirs.cls.predictions(x)
    expected = F.cross_entropy(scores.view(-1, scores.shape[-1]), labels.view(-1))  # BertForMaskedLM's loss
    want_grad, = torch.autograd.grad(expected, x)
    out = BertForPreTrainingOutput()
    masked_lm(head.transform, head.decoder.weight, head.bias, x.detach(), labels.clamp(min=0), labels,
              scores.shape[-1], False, out)
    x_in = x.detach().clone().requires_grad_(True)
    got = check.call(case, x_in, labels.clone(), head)
    ok = isinstance(got, torch.Tensor) and got.numel() == 1 and got.requires_grad
    check.expect(ok, case, "a scalar tensor that carries gradients", show(got),
                 "return the tensor F.cross_entropy gives (no .item(), no torch.no_grad())")
    selected = labels != IGNORE_INDEX
    rows, n = x.detach()[selected], int(selected.sum())
    mistakes = {
        "average over the masked positions (F.cross_entropy's default), not the sum": lambda: expected * n,
        "divide by the number of MASKED positions, not all positions": lambda: expected * n / labels.numel(),
        "score the transformed rows: predictions.transform(rows) before the decoder": lambda: F.cross_entropy(
            F.linear(rows, head.decoder.weight, head.bias), labels[selected]),
        "add the bias: F.linear(h, predictions.decoder.weight, predictions.bias)": lambda: F.cross_entropy(
            F.linear(head.transform(rows), head.decoder.weight), labels[selected]),
        "pass the raw scores (logits) to F.cross_entropy: it applies the softmax itself": lambda: F.cross_entropy(
            head(rows).softmax(-1), labels[selected]),
    }
    hint = diagnose(got.detach().reshape(()), {k: (lambda f=f: f().detach().reshape(())) for k, f in
                                                 mistakes.items()}, "gather the rows where labels != -100, "
                     "score them with predictions, then F.cross_entropy against their labels")
    check.expect(math.isclose(got.item(), expected.item(), rel_tol=1e-5, abs_tol=1e-5), case,
                 f"{expected.item():.6f}  (transformers' BertForMaskedLM; bertmini's masked_lm: "
                 f"{out.mlm_loss.item():.6f})", f"{got.item():.6f}", hint)
    got_grad, = torch.autograd.grad(got, x_in)
    check.expect(torch.allclose(got_grad, want_grad, atol=1e-6, rtol=1e-4), case + " (the gradient)",
                 f"d loss / d sequence_output = {show(want_grad)}", show(got_grad),
                 "build the loss from sequence_output with torch operations only, so autograd can follow it")


def _nsp_docs(n_articles: int, rng: random.Random) -> tuple[list[list[list[int]]], dict]:
    """Articles of sentences of unique ids, some empty and some of one sentence, and where each sentence is."""
    docs, where, next_id = [], {}, 1000
    for a in range(n_articles):
        doc = []
        for i in range(rng.choice([0, 1] + [rng.randint(2, 11)] * 8)):
            sentence = list(range(next_id, next_id + rng.randint(3, 9)))
            next_id += len(sentence)
            where[tuple(sentence)] = (a, i)
            doc.append(sentence)
        docs.append(doc)
    return docs, where


def check_nsp_pairs(fn: Callable) -> None:
    """Next-sentence-prediction pairs: ``fn(docs, rng)``, with ``docs`` a list of articles, each a list
    of sentences, each a list of token ids, and ``rng`` a ``random.Random``. For every sentence that
    has a next sentence in its article, one pair ``(a, b, label)``: ``a`` is the sentence; with
    probability 1/2 ``b`` is the sentence that follows it and ``label`` is 0
    (``bertmini.nsp.IS_NEXT``), else ``b`` is a random sentence of a random *other* article and
    ``label`` is 1 (``NOT_NEXT``). Articles may be empty or hold one sentence. Every draw comes from
    ``rng``; ``docs`` is not modified. Pairs may come in any order.

    Checked on 300 synthetic articles (every sentence traceable) and on two, beside the NotNext
    share of ``bertmini.nsp.make_nsp_pairs`` (which packs several sentences per segment)."""
    check = Check("check_nsp_pairs", fn)
    docs, where = _nsp_docs(300, random.Random(0))
    negatives, sources = _check_nsp_run(check, "300 articles (some empty, some of one sentence)", docs, where,
                                        IS_NEXT, NOT_NEXT)
    n = sum(max(len(d) - 1, 0) for d in docs)
    check.expect(rate_ok(negatives, n, 0.5), f"300 articles, {n} pairs", "about half the pairs NotNext",
                 f"{negatives / n:.1%}", "flip a fair coin per pair: rng.random() < 0.5")
    others = sum(1 for d in docs if d) - 1
    check.expect(len(sources) > others / 2, f"300 articles, {negatives} NotNext pairs",
                 f"random B sentences taken from many of the {others} other non-empty articles",
                 f"from {len(sources)} articles", "pick the other article at random: rng.choice(...)")
    first = fn(copy.deepcopy(docs), random.Random(3))
    second = fn(copy.deepcopy(docs), random.Random(3))
    check.expect([_pair_key(p) for p in first] == [_pair_key(p) for p in second], "two calls with random.Random(3)",
                 "the same pairs both times", "different pairs",
                 "draw only from the rng you are given (rng.random(), rng.choice(...)), never from `random.` itself")
    small, small_where = _nsp_docs(2, random.Random(5))
    small = [d or [[1, 2, 3]] for d in small] + [[[7, 8], [9, 10], [11, 12]]]
    small_where = {tuple(s): (a, i) for a, d in enumerate(small) for i, s in enumerate(d)}
    _check_nsp_run(check, "three articles", small, small_where, IS_NEXT, NOT_NEXT)
    theirs = make_nsp_pairs(docs, max_length=24, seed=0)
    share = sum(label == NOT_NEXT for _, _, label in theirs) / len(theirs)
    check.passed(f"{negatives / n:.1%} NotNext; bertmini.nsp.make_nsp_pairs on the same articles: {share:.1%}")


def _pair_key(pair):
    a, b, label = pair
    return tuple(a), tuple(b), int(label)


def _check_nsp_run(check: Check, what, docs, where, is_next, not_next) -> tuple[int, set]:
    __tracebackhide__ = True
    before = copy.deepcopy(docs)
    pairs = check.call(what, docs, random.Random(0), hint="some articles are empty or hold one sentence: take "
                       "the other article among those with at least one sentence, and pair only sentences that "
                       "have a next one")
    check.expect(docs == before, what, "docs unchanged", "docs was modified",
                 "build new lists for the pairs; do not pop or shuffle the articles")
    check.expect(isinstance(pairs, Sequence), what, "a list of (a, b, label)", show(pairs), "return a list")
    seen, negatives, sources = set(), 0, set()
    for k, pair in enumerate(pairs):
        case = f"{what}, pair {k}: {show(pair, 120)}"
        ok = isinstance(pair, Sequence) and len(pair) == 3 and pair[2] in (is_next, not_next)
        check.expect(ok, case, "a triple (a, b, label) with label 0 or 1", show(pair, 120),
                     "append (a, b, IS_NEXT) or (a, b, NOT_NEXT)")
        a, b, label = tuple(pair[0]), tuple(pair[1]), int(pair[2])
        art, i = where.get(a, (None, None))
        check.expect(art is not None and i < len(docs[art]) - 1 and (art, i) not in seen, case,
                     "a is one sentence that has a next sentence, each such sentence once",
                     "a sentence seen twice" if (art, i) in seen else f"a = {show(list(a), 80)}",
                     "loop over every article and every sentence but its last: for i in range(len(doc) - 1)")
        seen.add((art, i))
        if label == is_next:
            check.expect(b == tuple(docs[art][i + 1]), case, "label 0 (IsNext): b is the sentence after a",
                         f"b = {show(list(b), 80)}", "for IsNext, b = doc[i + 1]")
        else:
            other = where.get(b, (None, None))[0]
            check.expect(other is not None and other != art, case,
                         "label 1 (NotNext): b is a sentence of ANOTHER article",
                         "a sentence of the same article" if other == art else f"b = {show(list(b), 80)}",
                         "choose the article among the others with at least one sentence, then a sentence of it")
            negatives += 1
            sources.add(other)
    wanted = {(a, i) for a, d in enumerate(docs) for i in range(len(d) - 1)}
    check.expect(seen == wanted, what, f"{len(wanted)} pairs, one per sentence with a next sentence",
                 f"{len(seen)} such pairs", "make one pair for each sentence that has a next sentence")
    return negatives, sources
