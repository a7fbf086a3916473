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


# =====================================================================  data preparation
def _check_labels(labels: Sequence[int], num_labels: int, what: str) -> None:
    bad = sorted({int(y) for y in labels if not 0 <= int(y) < num_labels})
    if bad:
        raise ValueError(f"{what}: labels {bad[:10]} are outside the label set 0..{num_labels - 1}; "
                         "map each label name to its index in the task's label list first")


def encode_classification(tokenizer, texts: Sequence[str], labels: Sequence[int] | None = None, *,
                          pairs: Sequence[str] | None = None, num_labels: int | None = None,
                          max_length: int = 128) -> list[dict]:
    """One example dict per text (or text pair): ``input_ids``, ``token_type_ids`` (lists,
    unpadded; :func:`collate` pads each batch) and ``labels`` if given.

    Over-long inputs are truncated to ``max_length`` tokens, longest segment first.
    ``num_labels`` (default: ``max(labels) + 1``) is checked so that a label outside
    the set fails here, with its value, instead of deep inside the loss.
    """
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs; pass one pair per text")
    if labels is not None:
        if len(labels) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels; pass one label per text")
        _check_labels(labels, num_labels if num_labels is not None else max(labels, default=-1) + 1,
                      "encode_classification")
    examples = []
    for i, text in enumerate(texts):
        enc = tokenizer.encode(text, None if pairs is None else pairs[i], max_length=max_length, truncation=True)
        ex = {"input_ids": enc.ids, "token_type_ids": enc.token_type_ids}
        if labels is not None:
            ex["labels"] = int(labels[i])
        examples.append(ex)
    return examples


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Word labels -> token labels: each word's label on its *first* sub-token, ``-100``
    (ignored by the loss) on its other sub-tokens and on ``[CLS]``/``[SEP]``.

    >>> align_labels([None, 0, 1, 1, 2, None], [3, 5, 0])
    [-100, 3, 5, -100, 0, -100]
    """
    out, previous = [], None
    for w in word_ids:
        out.append(IGNORE_INDEX if w is None or w == previous else int(word_labels[w]))
        previous = w
    return out


def word_ids_for(words: Sequence[str], offsets: Sequence[tuple[int, int]],
                 special: Sequence[int]) -> tuple[str, list[int | None]]:
    """Helper of :func:`encode_ner`: the words joined by spaces, and for each token the
    index of the word its characters come from (None for special tokens)."""
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    word_of = []
    for (a, _), is_special in zip(offsets, special):
        if is_special:
            word_of.append(None)
            continue
        lo, hi = 0, len(starts) - 1  # the last word starting at or before character a
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if starts[mid] <= a else (lo, mid - 1)
        word_of.append(lo)
    return " ".join(words), word_of


def encode_ner(tokenizer, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None, *,
               label_list: Sequence[str], max_length: int = 128) -> list[dict]:
    """One example per sentence of words (tweets come pre-split): ``input_ids``,
    ``token_type_ids``, ``word_ids`` and, with ``tags``, token ``labels`` aligned by
    :func:`align_labels`. Words past ``max_length`` tokens are cut off (they are
    predicted ``O``). A tag not in ``label_list`` is an error that names it."""
    index = {t: i for i, t in enumerate(label_list)}
    examples = []
    for s, words in enumerate(sentences):
        if len(words) == 0:
            raise ValueError(f"sentence {s} has no words")
        enc = tokenizer.encode(" ".join(words), max_length=max_length, truncation=True)
        _, word_of = word_ids_for(words, enc.offsets, enc.special_tokens_mask)
        ex = {"input_ids": enc.ids, "token_type_ids": enc.token_type_ids, "word_ids": word_of,
              "num_words": len(words)}
        if tags is not None:
            if len(tags[s]) != len(words):
                raise ValueError(f"sentence {s}: {len(words)} words but {len(tags[s])} tags")
            unknown = sorted(set(tags[s]) - set(index))
            if unknown:
                raise ValueError(f"sentence {s}: tags {unknown} are not in the label list {list(label_list)}")
            ex["labels"] = align_labels(word_of, [index[t] for t in tags[s]])
        examples.append(ex)
    return examples


_PAD_VALUE = {"labels": IGNORE_INDEX, "attention_mask": 0}
_MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask", "labels", "start_positions", "end_positions")


def collate(examples: Sequence[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Dynamic padding: stack a batch, padding each list to the longest in *this* batch
    (ids with ``pad_token_id``, token labels with -100), and add ``attention_mask``.
    Only the keys a model takes are kept (``word_ids`` etc. stay with the examples)."""
    if len(examples) == 0:
        raise ValueError("collate: the batch is empty; give at least one example")
    width = max(len(ex["input_ids"]) for ex in examples)
    batch: dict[str, torch.Tensor] = {}
    for key in _MODEL_KEYS:
        if key == "attention_mask":
            rows = [[1] * len(ex["input_ids"]) + [0] * (width - len(ex["input_ids"])) for ex in examples]
        elif key not in examples[0]:
            continue
        elif isinstance(examples[0][key], list):
            pad = pad_token_id if key == "input_ids" else _PAD_VALUE.get(key, 0)
            rows = [ex[key] + [pad] * (width - len(ex[key])) for ex in examples]
        else:
            rows = [ex[key] for ex in examples]
        batch[key] = torch.tensor(rows, dtype=torch.long)
    return batch


def make_batches(examples: Sequence[dict], batch_size: int, shuffle: bool = True, pad_token_id: int = 0):
    """A zero-argument function returning one epoch of padded batches, in a fresh random
    order each call (drawn from torch's RNG, which ``train`` seeds): what ``train`` wants."""
    if len(examples) == 0:
        raise ValueError("make_batches: no examples; the training set is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    def epoch():
        order = torch.randperm(len(examples)).tolist() if shuffle else range(len(examples))
        order = list(order)
        for i in range(0, len(order), batch_size):
            yield collate([examples[j] for j in order[i:i + batch_size]], pad_token_id)

    epoch.num_batches = math.ceil(len(examples) / batch_size)
    return epoch


class _Epochs:
    """``make_batches`` with a length, so ``TrainConfig(epochs=...)`` can count steps."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self):
        return self.fn()

    def __len__(self):
        return self.fn.num_batches


# =====================================================================  the recipe
def finetune(model: nn.Module, examples: Sequence[dict], *, lr: float, epochs: float = 3,
             batch_size: int = 32, micro_batch_size: int | None = None, warmup_ratio: float = 0.1,
             weight_decay: float = 0.01, max_steps: int | None = None, seed: int = 0,
             eval_fn=None, eval_every: int | None = None, pad_token_id: int = 0,
             desc: str = "fine-tune", amp: str | None = None, progress: bool = True):
    """Fine-tune ``model`` in place with the BERT paper's recipe; return the ``History``.

    AdamW (no decay on biases and LayerNorm, ``weight_decay`` elsewhere), the learning
    rate warmed up linearly over the first ``warmup_ratio`` of the steps, then decayed
    linearly to 0; an effective batch of ``batch_size`` made of ``batch_size //
    micro_batch_size`` accumulated micro-batches (so memory holds only a micro-batch);
    each micro-batch padded to its own longest example. The loop is ``bertmini.train``'s.
    ``amp=None`` (fp32) by default: small CPU runs gain little from bf16 and lose precision.
    """
    from bertmini.train import TrainConfig, train

    micro = micro_batch_size or batch_size
    if batch_size % micro:
        raise ValueError(f"batch_size={batch_size} is not a multiple of micro_batch_size={micro}")
    data = _Epochs(make_batches(examples, micro, shuffle=True, pad_token_id=pad_token_id))
    config = TrainConfig(lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                         epochs=None if max_steps else epochs, max_steps=max_steps,
                         grad_accum_steps=batch_size // micro, amp=amp, eval_every=eval_every,
                         seed=seed, desc=desc, progress=progress, log_every=5)
    return train(model, data, config, eval_fn=eval_fn)


@torch.no_grad()
def predict_logits(model: nn.Module, examples: Sequence[dict], batch_size: int = 64,
                   pad_token_id: int = 0) -> list[torch.Tensor]:
    """Logits for each example, in order, without labels (eval mode, no gradients). For a
    sequence head each is ``(num_labels,)``; for a token or span head ``(len, ...)`` with
    the padding cut off."""
    if len(examples) == 0:
        raise ValueError("predict_logits: no examples")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    try:
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_token_id).items()
                     if k in ("input_ids", "token_type_ids", "attention_mask")}
            logits = model(**batch).logits.float().cpu()
            for row, ex in zip(logits, chunk):
                out.append(row if row.dim() == 1 else row[:len(ex["input_ids"])])
    finally:
        model.train(was_training)
    return out


def classification_scores(model: nn.Module, examples: Sequence[dict], batch_size: int = 64) -> dict[str, float]:
    """Accuracy and macro-F1 of a sequence classifier on labelled examples."""
    preds = [int(l.argmax()) for l in predict_logits(model, examples, batch_size)]
    gold = [ex["labels"] for ex in examples]
    return {"accuracy": accuracy(preds, gold), "macro_f1": macro_f1(preds, gold)}


def predict_tags(model: nn.Module, examples: Sequence[dict], label_list: Sequence[str],
                 batch_size: int = 64) -> list[list[str]]:
    """One tag per *word*: the prediction at each word's first sub-token (``O`` for
    words cut off by truncation)."""
    tags = []
    for logits, ex in zip(predict_logits(model, examples, batch_size), examples):
        words = ["O"] * ex["num_words"]
        best = logits.argmax(-1).tolist()
        previous = None
        for pos, w in enumerate(ex["word_ids"]):
            if w is not None and w != previous:
                words[w] = label_list[best[pos]]
            previous = w
        tags.append(words)
    return tags


@torch.no_grad()
def encode_features(encoder: nn.Module, examples: Sequence[dict], pooling: str = "mean",
                    batch_size: int = 64) -> torch.Tensor:
    """Frozen features: one vector per example from an encoder that is not trained.
    ``pooling="cls"`` takes the final ``[CLS]`` state, ``"mean"`` averages the real
    tokens (what sentence-embedding models such as all-MiniLM are trained for)."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling={pooling!r}; use 'mean' or 'cls'")
    if len(examples) == 0:
        raise ValueError("encode_features: no examples")
    encoder = getattr(encoder, "bert", encoder)
    was_training = encoder.training
    encoder.eval()
    feats = []
    try:
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i:i + batch_size])
            hidden = encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
            if pooling == "cls":
                feats.append(hidden[:, 0])
            else:
                m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                feats.append((hidden * m).sum(1) / m.sum(1))
    finally:
        encoder.train(was_training)
    return torch.cat(feats).float()


# =====================================================================  question answering
def _check_answer(i: int, context: str, answer_text: str, answer_start: int) -> None:
    if not answer_text:
        raise ValueError(f"QA example {i}: the answer is empty; every training question needs an answer span")
    if context[answer_start:answer_start + len(answer_text)] != answer_text:
        found = context.find(answer_text)
        hint = (f"it occurs at character {found}; fix answer_start" if found >= 0
                else "the answer text does not occur in the context at all")
        raise ValueError(f"QA example {i}: answer {answer_text!r} is not at character {answer_start} "
                         f"of its context ({context[answer_start:answer_start + len(answer_text)]!r} is); {hint}")


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
        q = tokenizer.encode(question).ids[1:-1][:max_question_length]
        c = tokenizer.encode(context)
        c_ids, c_offsets = c.ids[1:-1], c.offsets[1:-1]
        room = max_length - len(q) - 3
        if room <= stride:
            raise ValueError(f"max_length={max_length} leaves {room} context tokens per window after the "
                             f"question, not more than stride={stride}; raise max_length or lower stride")
        if answers is not None:
            text, start = answers[i]
            _check_answer(i, context, text, start)
            end = start + len(text)
            # the answer's first and last token in the context (offsets are characters)
            covered = [t for t, (s, e) in enumerate(c_offsets) if e > start and s < end]
            if not covered:
                raise ValueError(f"QA example {i}: no token of the context covers the answer {text!r} "
                                 "(it is only white space or characters the tokenizer drops)")
            a_first, a_last = covered[0], covered[-1]
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


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, allowed: torch.Tensor,
              max_answer_length: int = 30) -> tuple[int, int, float]:
    """The span ``(i, j)`` maximising ``start_logits[i] + end_logits[j]`` with ``i <= j``,
    ``j - i < max_answer_length`` and both ends at ``allowed`` (context) positions.
    Returns ``(i, j, score)``; ``(-1, -1, -inf)`` if nothing is allowed."""
    s = start_logits.float().masked_fill(~allowed, float("-inf"))
    e = end_logits.float().masked_fill(~allowed, float("-inf"))
    scores = s[:, None] + e[None, :]
    n = scores.shape[0]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    scores = scores.masked_fill((j < i) | (j - i >= max_answer_length), float("-inf"))
    best = int(scores.argmax())
    score = float(scores.flatten()[best])
    if score == float("-inf"):
        return -1, -1, score
    return best // n, best % n, score


def predict_answers(model: nn.Module, windows: Sequence[dict], contexts: Sequence[str],
                    max_answer_length: int = 30, batch_size: int = 32) -> list[tuple[str, int]]:
    """For each context, the best-scoring span over all of its windows, as
    ``(answer_text, answer_start)`` in the original context (its own case and spacing)."""
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


# =====================================================================  use what you trained
@dataclass
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]


@dataclass
class FineTunedClassifier:
    """A sequence classifier ready to use: model, tokenizer and label names together."""

    model: nn.Module
    tokenizer: Any
    labels: list[str]
    max_length: int = 128

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Prediction]:
        """The most probable label of each text (or pair), with its softmax probability."""
        if isinstance(texts, str):
            raise TypeError("predict expects a list of texts; wrap a single text as [text]")
        if len(texts) == 0:
            raise ValueError("predict: no texts given")
        examples = encode_classification(self.tokenizer, texts, pairs=pairs, max_length=self.max_length)
        out = []
        for logits in predict_logits(self.model, examples):
            p = logits.softmax(-1)
            k = int(p.argmax())
            out.append(Prediction(self.labels[k], float(p[k]),
                                  {name: float(v) for name, v in zip(self.labels, p)}))
        return out


def save_finetuned(directory: str | Path, model: nn.Module, tokenizer, labels: Sequence[str],
                   max_length: int = 128) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``vocab.txt`` and ``labels.json``:
    everything :func:`load_finetuned` needs, no pickles. Only sequence classifiers."""
    from safetensors.torch import save as st_save

    from bertmini import runtime
    from bertmini.heads import BertForSequenceClassification

    if not isinstance(model, BertForSequenceClassification):
        raise TypeError(f"save_finetuned saves a BertForSequenceClassification, got {type(model).__name__}")
    if len(labels) != model.num_labels:
        raise ValueError(f"{len(labels)} label names for a model with {model.num_labels} outputs")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.to_json(directory / "config.json")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    runtime.atomic_write_bytes(directory / "model.safetensors", st_save(state))
    tokenizer.save(directory / "vocab.txt")
    meta = {"labels": list(labels), "max_length": max_length, "task": "sequence_classification"}
    runtime.atomic_write_bytes(directory / "labels.json", json.dumps(meta, indent=2).encode())
    return directory


def load_finetuned(directory: str | Path) -> FineTunedClassifier:
    """Load what :func:`save_finetuned` wrote, in eval mode."""
    from safetensors.torch import load_file

    from bertmini.config import BertConfig
    from bertmini.heads import BertForSequenceClassification
    from bertmini.tokenization import BertTokenizer

    directory = Path(directory)
    missing = [n for n in ("config.json", "model.safetensors", "vocab.txt", "labels.json")
               if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks {missing}; save the model with save_finetuned(directory, ...)")
    meta = json.loads((directory / "labels.json").read_text())
    model = BertForSequenceClassification(BertConfig.from_json(directory / "config.json"),
                                          num_labels=len(meta["labels"]))
    model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
    return FineTunedClassifier(model.eval(), BertTokenizer.from_vocab(directory / "vocab.txt"),
                               list(meta["labels"]), meta["max_length"])
