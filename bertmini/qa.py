"""Extractive question answering end to end: windows in, character spans out.

* :func:`encode_qa` packs each question with its context as ``[CLS] question [SEP]
  context [SEP]``, cuts a long context into overlapping windows, and keeps each
  token's character offsets in the context (and, for training, the answer's first
  and last token, or ``[CLS]`` where a window does not hold the whole answer);
* :func:`best_span` picks the valid span with the highest start + end score;
* :func:`predict_answers` runs the model (:class:`BertForQuestionAnswering`) over
  every window and maps the best span of each question back to its context's text.

The scores are :func:`bertmini.metrics.squad_scores`.

Not handled: unanswerable questions (SQuAD 2.0), n-best answer lists, several
answers per training question, and questions longer than ``max_question_length``
tokens (they are cut).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bertmini.finetuning import predict_logits


def _check_answer(i: int, context: str, answer_text: str, answer_start: int) -> None:
    if not answer_text:
        raise ValueError(f"QA example {i}: the answer is empty; every training question needs an answer span")
    if context[answer_start:answer_start + len(answer_text)] != answer_text:
        found = context.find(answer_text)
        hint = (f"it occurs at character {found}; fix answer_start" if found >= 0
                else "the answer text does not occur in the context at all")
        raise ValueError(f"QA example {i}: answer {answer_text!r} is not at character {answer_start} "
                         f"of its context ({context[answer_start:answer_start + len(answer_text)]!r} is); {hint}")


def _answer_tokens(i: int, context: str, answer: tuple[str, int],
                   offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The first and last context token that overlap the answer's characters."""
    text, start = answer
    _check_answer(i, context, text, start)
    end = start + len(text)
    covered = [t for t, (s, e) in enumerate(offsets) if e > start and s < end]
    if not covered:
        raise ValueError(f"QA example {i}: no token of the context covers the answer {text!r} "
                         "(it is only white space or characters the tokenizer drops)")
    return covered[0], covered[-1]


def encode_qa(tokenizer, questions: Sequence[str], contexts: Sequence[str],
              answers: Sequence[tuple[str, int]] | None = None, *, max_length: int = 192,
              stride: int = 64, max_question_length: int = 32) -> list[dict]:
    """Question/context pairs -> windows ``[CLS] question [SEP] context piece [SEP]``.

    A context longer than one window is cut into windows that overlap by ``stride``
    tokens, so an answer cut by one window's edge lies whole in the next. Each window
    keeps ``example`` (its question's index) and ``context_offsets`` (the character span
    of each token in the context, None outside the context) for mapping answers back.
    With ``answers`` = ``(answer_text, answer_start)`` pairs, each window gets
    ``start_positions``/``end_positions``: the answer's first and last token, or 0
    (``[CLS]``) for a window that does not contain the whole answer, as in BERT's SQuAD code.
    """
    if not (len(questions) == len(contexts) and (answers is None or len(answers) == len(questions))):
        raise ValueError("encode_qa: questions, contexts (and answers) must have the same length")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows = []
    for i, (question, context) in enumerate(zip(questions, contexts)):
        q = tokenizer.encode(question).ids[1:-1][:max_question_length]  # [1:-1]: drop [CLS] and [SEP]
        c = tokenizer.encode(context)
        c_ids, c_offsets = c.ids[1:-1], c.offsets[1:-1]
        room = max_length - len(q) - 3  # context tokens per window, after [CLS] q [SEP] ... [SEP]
        if room <= stride:
            raise ValueError(f"max_length={max_length} leaves {room} context tokens per window after the "
                             f"question, not more than stride={stride}; raise max_length or lower stride")
        if answers is not None:
            a_first, a_last = _answer_tokens(i, context, answers[i], c_offsets)
        w_start = 0
        while True:
            w_end = min(w_start + room, len(c_ids))
            ids = [cls_id] + q + [sep_id] + c_ids[w_start:w_end] + [sep_id]
            first_ctx = len(q) + 2
            window = {"input_ids": ids,
                      "token_type_ids": [0] * first_ctx + [1] * (w_end - w_start + 1),
                      "example": i,
                      "context_offsets": [None] * first_ctx + list(c_offsets[w_start:w_end]) + [None]}
            if answers is not None:
                inside = w_start <= a_first and a_last < w_end
                window["start_positions"] = first_ctx + a_first - w_start if inside else 0
                window["end_positions"] = first_ctx + a_last - w_start if inside else 0
            windows.append(window)
            if w_end == len(c_ids):
                break
            w_start += room - stride
    return windows


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor,
              allowed: torch.Tensor, max_answer_length: int = 30
              ) -> tuple[int, int, float]:
    """The span ``(i, j)`` maximising ``start_logits[i] + end_logits[j]``
    with ``i <= j``, ``j - i < max_answer_length`` and both ends at
    ``allowed`` (context) positions. Returns ``(i, j, score)``;
    ``(-1, -1, -inf)`` if nothing is allowed."""
    s = start_logits.float().masked_fill(~allowed, float("-inf"))
    e = end_logits.float().masked_fill(~allowed, float("-inf"))
    scores = s[:, None] + e[None, :]  # every (start, end) pair at once
    n = scores.shape[0]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    too_long = j - i >= max_answer_length
    scores = scores.masked_fill((j < i) | too_long, float("-inf"))
    best = int(scores.argmax())
    score = float(scores.flatten()[best])
    if score == float("-inf"):
        return -1, -1, score
    return best // n, best % n, score


def predict_answers(model: nn.Module, windows: Sequence[dict], contexts: Sequence[str],
                    max_answer_length: int = 30, batch_size: int = 32) -> list[tuple[str, int]]:
    """For each context, the best-scoring span over all of its windows, as
    ``(answer_text, answer_start)`` in the original context (its own case and spacing);
    ``("", 0)`` for a context none of whose windows allows a span."""
    best: dict[int, tuple[float, int, int]] = {}
    for logits, w in zip(predict_logits(model, windows, batch_size), windows):
        allowed = torch.tensor([o is not None for o in w["context_offsets"]])
        i, j, score = best_span(logits[:, 0], logits[:, 1], allowed, max_answer_length)
        if i >= 0 and score > best.get(w["example"], (float("-inf"),))[0]:
            best[w["example"]] = (score, w["context_offsets"][i][0], w["context_offsets"][j][1])
    out = []
    for k, context in enumerate(contexts):
        if k not in best:
            out.append(("", 0))
            continue
        _, a, b = best[k]
        out.append((context[a:b], a))
    return out
