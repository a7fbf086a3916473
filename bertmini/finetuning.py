"""Fine-tuning: the recipe, the data preparation for four task shapes, and the metrics.

One pretrained encoder, four small heads (:mod:`bertmini.heads`), four task shapes:

* a single sentence -> a label (sentiment, topic): :func:`encode_classification`;
* a pair of texts -> a label (does this description match this article?): the same
  function with ``pairs=``, the pair packed as ``[CLS] a [SEP] b [SEP]``;
* words -> a BIO tag each (NER): :func:`encode_ner`, the word's tag on its first
  sub-token and ``-100`` (ignored by the loss) on the rest;
* a question and a context -> a span of the context (QA): :func:`encode_qa`, long
  contexts cut into overlapping windows, :func:`best_span` / :func:`predict_answers`
  map logits back to character offsets.

The recipe (:func:`finetune`) is the one of the BERT paper: AdamW with weight decay
0.01 except on biases and LayerNorm, 10% linear warmup then linear decay, batch 32
(reached by gradient accumulation if memory is short), 2-4 epochs, each batch padded
only to its own longest sequence. It reuses :mod:`bertmini.train` for the loop.

Metrics are written out here rather than imported, because what they count is part
of the lesson: :func:`accuracy`, :func:`macro_f1`, :func:`entity_scores` (entity-level
P/R/F1 over BIO tags, as conlleval counts them) and :func:`squad_scores` (exact
match and token F1 after SQuAD's answer normalisation).

Baselines: :class:`BagOfWords` (a logistic regression on word presence) and
:class:`LogisticRegression` on frozen encoder features (:func:`encode_features`).

Not handled: multi-label classification, regression heads, CRF decoding for NER,
unanswerable questions (SQuAD 2.0) and n-best answer lists.
"""
from __future__ import annotations

import collections
import json
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # positions the cross-entropy loss skips, as in torch and transformers
_PUNCTUATION = frozenset(string.punctuation)


# =====================================================================  metrics
def _check_same_length(predictions: Sequence, references: Sequence, what: str) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{what}: {len(predictions)} predictions but {len(references)} references; "
                         "pass one prediction per reference")
    if len(predictions) == 0:
        raise ValueError(f"{what}: no predictions given; a score over zero examples is undefined")


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """The fraction of predictions equal to their reference label."""
    _check_same_length(predictions, references, "accuracy")
    return sum(int(p) == int(r) for p, r in zip(predictions, references)) / len(references)


def macro_f1(predictions: Sequence[int], references: Sequence[int],
             labels: Iterable[int] | None = None) -> float:
    """The unweighted mean of per-class F1, so a rare class counts as much as a common one.

    ``labels`` (default: every label seen in either list) fixes the classes averaged
    over; a class with no prediction and no reference is skipped, one that is only
    predicted or only present scores 0.
    """
    _check_same_length(predictions, references, "macro_f1")
    classes = sorted(set(labels) if labels is not None else set(predictions) | set(references))
    scores = []
    for c in classes:
        tp = sum(p == c and r == c for p, r in zip(predictions, references))
        fp = sum(p == c and r != c for p, r in zip(predictions, references))
        fn = sum(p != c and r == c for p, r in zip(predictions, references))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities in one BIO tag sequence, as ``(type, start, end)`` with ``end`` exclusive.

    Broken sequences are read the way conlleval reads them: an ``I-X`` that does not
    continue an entity of type ``X`` starts a new one (``O I-per`` is one ``per``
    entity; ``B-per I-loc`` is two entities). Tags must be ``O``, ``B-type`` or ``I-type``.
    """
    entities: list[tuple[str, int, int]] = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        if tag == "O":
            prefix, t = "O", None
        elif len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
            prefix, t = tag[0], tag[2:]
        else:
            raise ValueError(f"tag {tag!r} at position {i} is not BIO; use 'O', 'B-<type>' or 'I-<type>'")
        continues = prefix == "I" and t == kind
        if kind is not None and not continues:
            entities.append((kind, start, i))
            kind = None
        if prefix in "BI" and not continues:
            kind, start = t, i
    return entities


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
    """Entity-level precision, recall and F1 over sentences of BIO tags.

    An entity counts as found only if its type *and* both boundaries match exactly;
    tokens tagged ``O`` correctly earn nothing (that is why token accuracy flatters NER).
    Returns ``precision, recall, f1`` and the counts ``n_gold, n_predicted, n_correct``.
    """
    _check_same_length(predictions, references, "entity_scores")
    n_gold = n_pred = n_correct = 0
    for i, (ref, pred) in enumerate(zip(references, predictions)):
        if len(ref) != len(pred):
            raise ValueError(f"sentence {i}: {len(ref)} gold tags but {len(pred)} predicted; "
                             "predict one tag per word")
        gold, guess = set(bio_entities(ref)), set(bio_entities(pred))
        n_gold, n_pred, n_correct = n_gold + len(gold), n_pred + len(guess), n_correct + len(gold & guess)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=f1,
                n_gold=n_gold, n_predicted=n_pred, n_correct=n_correct)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, drop punctuation and the articles a/an/the,
    collapse white space."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 over the bags of normalised answer tokens (SQuAD's partial credit)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:  # SQuAD: both empty is a match, one empty is not
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]
                 ) -> dict[str, float]:
    """Mean exact match and token F1; a reference may be a list of accepted answers
    (the best one counts, as in SQuAD)."""
    _check_same_length(predictions, references, "squad_scores")
    em = f1 = 0.0
    for pred, ref in zip(predictions, references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        em += max(exact_match(pred, r) for r in refs)
        f1 += max(token_f1(pred, r) for r in refs)
    return dict(exact_match=em / len(predictions), f1=f1 / len(predictions))


# =====================================================================  baselines
class LogisticRegression(nn.Module):
    """Multinomial logistic regression, ``softmax(X W + b)``, fitted by full-batch L-BFGS.

    ``X`` may be dense or a sparse COO tensor (bag-of-words features). The L2 penalty
    ``l2 * |W|^2 / 2`` is added to the *mean* cross-entropy, so its strength does not
    depend on how many examples there are.
    """

    def __init__(self, num_features: int, num_labels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_features, num_labels))
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sparse.mm(x, self.weight) if x.is_sparse else x @ self.weight) + self.bias

    def fit(self, x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, max_iter: int = 200
            ) -> "LogisticRegression":
        y = torch.as_tensor(y, dtype=torch.long)
        if x.shape[0] == 0:
            raise ValueError("LogisticRegression.fit: no training examples")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"LogisticRegression.fit: {x.shape[0]} rows of features but {y.shape[0]} labels")
        opt = torch.optim.LBFGS(self.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(self(x), y) + 0.5 * l2 * self.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).softmax(-1)


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class BagOfWords:
    """The baseline every pretrained model must beat: which words occur, weighed by a
    logistic regression. Word order, negation scope and unseen words are invisible to it.

    Words are lower-cased ``[a-z0-9']`` runs seen at least ``min_count`` times in the
    training texts; a text becomes a 0/1 vector over them (presence, not counts).
    ``l2`` is chosen on the validation texts if several values are given.
    """

    def __init__(self, min_count: int = 2):
        self.min_count = min_count
        self.vocab: dict[str, int] = {}
        self.model: LogisticRegression | None = None
        self.l2: float | None = None

    @staticmethod
    def words(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def featurize(self, texts: Sequence[str]) -> torch.Tensor:
        rows, cols = [], []
        for i, text in enumerate(texts):
            for j in sorted({self.vocab[w] for w in self.words(text) if w in self.vocab}):
                rows.append(i)
                cols.append(j)
        idx = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
        return torch.sparse_coo_tensor(idx, torch.ones(len(rows)), (len(texts), len(self.vocab)),
                                       check_invariants=False).coalesce()

    def fit(self, texts: Sequence[str], labels: Sequence[int], num_labels: int | None = None,
            l2: float | Sequence[float] = (1e-4, 1e-3, 1e-2),
            validation: tuple[Sequence[str], Sequence[int]] | None = None) -> "BagOfWords":
        if len(texts) == 0:
            raise ValueError("BagOfWords.fit: no training texts")
        counts = collections.Counter(w for t in texts for w in set(self.words(t)))
        self.vocab = {w: i for i, w in enumerate(sorted(w for w, c in counts.items() if c >= self.min_count))}
        num_labels = num_labels or max(labels) + 1
        x, y = self.featurize(texts), torch.tensor(list(labels))
        candidates = [l2] if isinstance(l2, (int, float)) else list(l2)
        best = None
        for value in candidates:
            model = LogisticRegression(len(self.vocab), num_labels).fit(x, y, l2=value)
            if validation is None and len(candidates) > 1:
                raise ValueError("BagOfWords.fit: pass validation=(texts, labels) to choose among several l2 values")
            score = accuracy(model.predict_proba(self.featurize(validation[0])).argmax(-1).tolist(),
                             validation[1]) if validation is not None else 0.0
            if best is None or score > best[0]:
                best = (score, value, model)
        _, self.l2, self.model = best
        return self

    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("BagOfWords: call fit(texts, labels) before predicting")
        return self.model.predict_proba(self.featurize(texts))

    def predict(self, texts: Sequence[str]) -> list[int]:
        return self.predict_proba(texts).argmax(-1).tolist()

    def top_words(self, label: int, k: int = 10) -> list[tuple[str, float]]:
        """The words that push hardest towards ``label`` (weight minus the mean over labels)."""
        w = self.model.weight.detach()
        score = w[:, label] - w.mean(1)
        words = {i: t for t, i in self.vocab.items()}
        return [(words[i], float(score[i])) for i in score.topk(k).indices.tolist()]
