"""Metrics for chapter 5, written out rather than imported: what they count is the lesson.

* classification: :func:`accuracy` and :func:`macro_f1` (the unweighted mean of
  per-class F1, so a rare class counts as much as a common one);
* calibration: :func:`reliability_bins` (is a 90%-confident prediction right 90% of the
  time?) and :func:`expected_calibration_error`, their weighted gap;
* named entities: :func:`bio_entities` reads the entities out of a BIO tag sequence
  the way conlleval does, :func:`entity_scores` counts entity-level P/R/F1;
* extractive QA: :func:`normalize_answer`, :func:`exact_match`, :func:`token_f1` and
  :func:`squad_scores`, after the official SQuAD v1.1 evaluation script;
* how far to trust a score on a small test set: :func:`bootstrap_interval`.

Not handled: micro/weighted averages, per-type NER breakdowns, the IOBES or IOB1
schemes, SQuAD 2.0's no-answer scoring, bootstrap refinements (BCa, stratified
resampling), and calibration bins of equal mass (the bins here are of equal width).
"""
from __future__ import annotations

import collections
import random
import re
import string
from typing import Callable, Iterable, Sequence

_PUNCTUATION = frozenset(string.punctuation)


def _check_same_length(predictions: Sequence, references: Sequence, what: str) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{what}: {len(predictions)} predictions but {len(references)} references; "
                         "pass one prediction per reference")
    if len(predictions) == 0:
        raise ValueError(f"{what}: no predictions given; a score over zero examples is undefined")


# ------------------------------------------------------------------ classification
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


# ------------------------------------------------------------------ calibration
def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10
                     ) -> list[dict[str, float]]:
    """The points of a reliability diagram: the predictions grouped by their confidence (the
    probability of the predicted class) into ``n_bins`` equal bins of [0, 1], each with its
    ``lower`` and ``upper`` edge, ``count``, mean ``confidence`` and ``accuracy`` (the share of
    ``correct`` predictions). Empty bins are left out. A confidence of exactly 1 goes in the top bin."""
    _check_same_length(confidences, correct, "reliability_bins")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int (10 is usual), got {n_bins!r}")
    bad = [c for c in confidences if not 0.0 <= float(c) <= 1.0]
    if bad:
        raise ValueError(f"confidences must be probabilities in [0, 1], got {bad[:3]}; "
                         "pass the softmax probability of the predicted class, not a logit")
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, c in enumerate(confidences):
        members[min(int(float(c) * n_bins), n_bins - 1)].append(i)
    bins = []
    for b, idx in enumerate(members):
        if idx:
            bins.append({"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": len(idx),
                         "confidence": sum(float(confidences[i]) for i in idx) / len(idx),
                         "accuracy": sum(bool(correct[i]) for i in idx) / len(idx)})
    return bins


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE (Guo et al., 2017): the gap between accuracy and mean confidence in each bin of
    :func:`reliability_bins`, weighted by the bin's share of the predictions. 0 is perfectly
    calibrated; an over-confident model has bins whose confidence is above their accuracy."""
    n = len(confidences)
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
               for b in reliability_bins(confidences, correct, n_bins))


# ------------------------------------------------------------------ named entities
def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities in one BIO tag sequence, as ``(type, start, end)`` with ``end`` exclusive.

    Broken sequences are read the way conlleval reads them: an ``I-X`` that does not
    continue an entity of type ``X`` starts a new one (``O I-per`` is one ``per``
    entity; ``B-per I-loc`` is two entities). Tags must be ``O``, ``B-type`` or ``I-type``.
    """
    entities: list[tuple[str, int, int]] = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):  # the extra "O" closes a final entity
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


# ------------------------------------------------------------------ extractive QA
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


# ------------------------------------------------------------------ how sure is a score?
def bootstrap_interval(score: Callable[..., float], *columns: Sequence,
                       resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for ``score(*columns)`` on a test set.

    Each column holds one entry per test example (predictions, references,
    a score per example). The test set is drawn again ``resamples`` times,
    with replacement and as large as before, and ``score`` recomputed on each
    draw; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of those scores. Every column is indexed by the *same* draw,
    so two models' scores are resampled in pairs, example by example::

        diff = lambda a, b, gold: accuracy(a, gold) - accuracy(b, gold)
        low, high = bootstrap_interval(diff, preds_a, preds_b, gold)

    It says how much the score would move on another test set of the same
    size from the same source; not how much it moves from one training run
    (seed) to another, which takes more runs.
    """
    n = _check_bootstrap(columns, resamples, level)
    rng = random.Random(seed)
    scores = []
    for _ in range(resamples):
        draw = rng.choices(range(n), k=n)  # n example indices, with replacement
        scores.append(score(*([col[i] for i in draw] for col in columns)))
    scores.sort()
    low, high = (1 - level) / 2, (1 + level) / 2
    return _quantile(scores, low), _quantile(scores, high)


def noise_verdict(low: float, high: float) -> str:
    """How the book reads an interval ``(low, high)`` of a difference between two scores:
    ``"within the noise"`` where it holds 0 (another test set could rank the two either
    way), else ``"beyond the noise"``."""
    if not low <= high:
        raise ValueError(f"noise_verdict: low={low!r} is above high={high!r}; pass the interval "
                         "in order, as bootstrap_interval returns it")
    return "within the noise" if low <= 0 <= high else "beyond the noise"


def _check_bootstrap(columns: Sequence[Sequence], resamples: int, level: float) -> int:
    """The number of test examples, after checking the arguments of :func:`bootstrap_interval`."""
    if not columns:
        raise ValueError("bootstrap_interval: no columns; pass the per-example lists score() reads")
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError(f"bootstrap_interval: columns of lengths {[len(c) for c in columns]}; "
                         "pass one entry per test example in every column")
    if n == 0:
        raise ValueError("bootstrap_interval: the columns are empty; a score over zero examples is undefined")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_interval: level={level!r}; use a fraction such as 0.95")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"bootstrap_interval: resamples={resamples!r}; use a positive int such as 1000")
    return n


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly (NumPy's default)."""
    position = q * (len(sorted_values) - 1)
    below = int(position)
    above = min(below + 1, len(sorted_values) - 1)
    return sorted_values[below] + (position - below) * (sorted_values[above] - sorted_values[below])
