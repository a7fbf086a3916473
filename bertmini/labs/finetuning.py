"""Lab 5's checkers: word labels on first sub-tokens, and the best answer span."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .. import data
from ..finetuning import align_labels
from ..qa import best_span
from .core import Check, hf_tokenizer, show


def check_align_labels(fn: Callable) -> None:
    """Word labels to token labels: ``fn(word_ids, word_labels) -> list[int]``, one label per token:
    the word's label on the *first* sub-token of each word, -100 on its other sub-tokens and
    wherever ``word_ids`` is None ([CLS], [SEP], padding), as ``bertmini.finetuning.align_labels``.
    Checked on edge cases and on real NER tweets whose ``word_ids`` come from ``transformers``'
    ``BertTokenizerFast`` (``is_split_into_words=True``)."""
    check = Check("check_align_labels", fn)
    cases = [("no tokens", [], []), ("only [CLS] and [SEP]", [None, None], []),
             ("one word of one piece", [None, 0, None], [5]),
             ("label 0 on a word of three pieces", [None, 0, 0, 0, 1, None], [0, 3]),
             ("a pair: word 0 again after [SEP]", [None, 0, 1, 1, None, 0, 0, None], [2, 4])]
    names = data.ner_labels()
    tokenizer = hf_tokenizer()
    for k, (words, tags) in enumerate(data.ner("validation")[:150]):
        word_ids = tokenizer(words, is_split_into_words=True, truncation=True, max_length=48).word_ids()
        cases.append((f"tweet {k} of the NER validation split: {' '.join(words)[:60]!r}", word_ids,
                      [names.index(t) for t in tags]))
    for what, word_ids, labels in cases:
        case = f"{what}; word_ids {show(word_ids, 100)}, word_labels {show(labels, 60)}"
        args = (list(word_ids), list(labels))
        got = check.call(case, *args)
        check.expect(args == (list(word_ids), list(labels)), case, "word_ids and word_labels unchanged",
                     "an argument was modified", "build a new list of labels")
        want = align_labels(word_ids, labels)
        got_list = [int(x) for x in got] if isinstance(got, (list, tuple, torch.Tensor)) else got
        check.expect(got_list == want, case, f"{want}  (bertmini.finetuning.align_labels)", show(got, 160),
                     _align_hint(word_ids, labels, got_list))
    check.passed("on transformers' word_ids of 150 tweets and the edge cases")


def _align_hint(word_ids, labels, got) -> str:
    every = [-100 if w is None else labels[w] for w in word_ids]
    last = [-100 if w is None or (i + 1 < len(word_ids) and word_ids[i + 1] == w) else labels[w]
            for i, w in enumerate(word_ids)]
    if got == every:
        return "label only the FIRST sub-token of each word; its other sub-tokens get -100"
    if got == last:
        return "the label goes on the FIRST sub-token of a word, not the last"
    if isinstance(got, list) and len(got) != len(word_ids):
        return "return one label per token: len(labels) == len(word_ids)"
    return ("walk through word_ids keeping the previous word id: None -> -100; the same id as the token "
            "before -> -100; a new word -> word_labels[word_id]")


def check_best_span(fn: Callable) -> None:
    """The answer span: ``fn(start_logits, end_logits, allowed, max_answer_length)`` returns
    ``(i, j, score)``, the span maximising ``start_logits[i] + end_logits[j]`` with ``i <= j``,
    ``j - i < max_answer_length`` and ``allowed[i]`` and ``allowed[j]`` True, and that score; or
    ``(-1, -1, float("-inf"))`` when no position is allowed, as ``bertmini.qa.best_span``. On a
    tie any best span is accepted. Checked on random scores of 1 to 40 tokens, ``max_answer_length``
    1 to 100, question-and-context masks and holes, against bertmini and a brute-force search (and
    ``transformers``' span decoder, which picks by products of start and end probabilities)."""
    check = Check("check_best_span", fn)
    g = torch.Generator().manual_seed(0)
    agree = _decode_spans_agreement()
    cases = [("a tie: every score 0", torch.zeros(7), torch.zeros(7), torch.ones(7, dtype=torch.bool), 3)]
    bad = torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0])  # the best start comes after the best end
    cases.append(("the best start lies after the best end", torch.tensor([0.0, 0.0, 0.0, 9.0, 0.0]), bad,
                  torch.ones(5, dtype=torch.bool), 5))
    for k in range(160):
        n = int(torch.randint(1, 41, (), generator=g))
        question = int(torch.randint(0, max(1, n // 3) + 1, (), generator=g))
        allowed = torch.zeros(n, dtype=torch.bool)
        allowed[question:-1 if n > question + 1 else n] = True
        if k % 3 == 0:
            allowed &= torch.rand(n, generator=g) > 0.3
        length = [1, 2, 5, 30, 100][k % 5]
        cases.append((f"random {n} tokens", torch.randn(n, generator=g) * 3, torch.randn(n, generator=g) * 3,
                      allowed, length))
    cases.append(("nothing allowed", torch.randn(6, generator=g), torch.randn(6, generator=g),
                  torch.zeros(6, dtype=torch.bool), 30))
    compared = []
    for what, start, end, allowed, length in cases:
        case = (f"{what}, max_answer_length={length}; start_logits {show(start, 80)}, "
                f"end_logits {show(end, 80)}, allowed {allowed.int().tolist()}")
        got = check.call(case, start.clone(), end.clone(), allowed.clone(), length)
        want = best_span(start, end, allowed, length)
        compared.append(_check_span(check, case, got, want, start, end, allowed, length, agree))
    compared = [c for c in compared if c is not None]
    detail = (f"; transformers' span decoder picks the same span on {sum(compared)} of {len(compared)}"
              if compared else "")
    check.passed(f"{len(cases)} score vectors, spans equal to bertmini.qa.best_span{detail}")


def _decode_spans_agreement():
    """``transformers``' QA span decoder, if this version has it where we know it (else None)."""
    try:
        from transformers.pipelines.document_question_answering import decode_spans
    except ImportError:
        return None
    return decode_spans


def _check_span(check: Check, case, got, want, start, end, allowed, length, decode_spans) -> bool | None:
    __tracebackhide__ = True
    check.expect(isinstance(got, Sequence) and len(got) == 3, case, "a triple (i, j, score)", show(got),
                 "return start, end, score")
    i, j, score = int(got[0]), int(got[1]), float(got[2])
    if want[0] < 0:
        check.expect((i, j) == (-1, -1) and score == float("-inf"), case, "(-1, -1, -inf): no position is allowed",
                     show(got), 'return -1, -1, float("-inf") when no position is allowed')
        return None
    valid = 0 <= i <= j < len(start) and j - i < length and bool(allowed[i]) and bool(allowed[j])
    check.expect(valid, case, f"a valid span, e.g. {want[:2]}", f"({i}, {j})", _span_hint(i, j, allowed, length))
    best = float(start[want[0]] + end[want[1]])
    check.expect(math.isclose(float(start[i] + end[j]), best, abs_tol=1e-5), case,
                 f"{want[:2]} with score {best:.4f}  (bertmini.qa.best_span)",
                 f"({i}, {j}) with score {float(start[i] + end[j]):.4f}",
                 "try every start i and every end j from i to i + max_answer_length - 1; the best start and the "
                 "best end chosen separately may not make a valid span")
    check.expect(math.isclose(score, best, abs_tol=1e-5), case, f"score {best:.4f}", f"score {score:.4f}",
                 "return start_logits[i] + end_logits[j] of your span as the score")
    if decode_spans is None:
        return None
    probs = [x.float().masked_fill(~allowed, float("-inf")).softmax(0).numpy() for x in (start, end)]
    s, e, _ = decode_spans(probs[0], probs[1], 1, length, allowed.numpy())
    return len(s) == 1 and (int(s[0]), int(e[0])) == want[:2]


def _span_hint(i, j, allowed, length) -> str:
    if j < i:
        return "the end must not come before the start: only pairs with i <= j"
    if j - i >= length:
        return f"the span is too long: j - i < max_answer_length ({length})"
    return "both the start and the end must be allowed positions (the context, not the question or [SEP])"
