"""What a pretrained model learned, and what a model needs no training for (chapter 4).

* :func:`unigram_baseline`: the best context-free guess for a blank, the bar a model
  must clear to show it reads context;
* :func:`topic_baseline` (with :func:`frequent_pieces`, :func:`segment_overlap`): NSP
  without a model, by word overlap alone;
* :func:`fill_in_the_blank` and :func:`nearest_tokens`: look inside the model.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .config import IGNORE_INDEX
from .nsp import IS_NEXT, NOT_NEXT, PretrainingData
from .runtime import eval_mode


def unigram_baseline(train: PretrainingData, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The best context-free guess: always the most frequent training token. Its accuracy
    on the masked positions of ``batches`` is the bar a model must clear to show it reads context."""
    ids = train.input_ids[train.special_tokens_mask == 0]
    counts = torch.bincount(ids)
    guess = int(counts.argmax())
    labels = torch.cat([b["labels"][b["labels"] != IGNORE_INDEX] for b in batches])
    return {"token_id": guess, "accuracy": float((labels == guess).float().mean())}


def frequent_pieces(data: PretrainingData, n: int = 100) -> set[int]:
    """The ``n`` most frequent pieces of ``data``'s segments: mostly function words and punctuation."""
    counts = torch.bincount(data.input_ids[data.special_tokens_mask == 0])
    return set(counts.topk(min(n, len(counts))).indices.tolist())


def segment_overlap(data: PretrainingData, ignore: set[int] = frozenset()) -> torch.Tensor:
    """For every pair, the Jaccard overlap of the pieces of A and of B, ``|A & B| / |A | B|``,
    over piece *sets* without the pieces in ``ignore`` (e.g. :func:`frequent_pieces`:
    function words say nothing about topic). Order-blind: A B and B A score the same."""
    real = data.special_tokens_mask == 0
    scores = torch.empty(len(data))
    for r in range(len(data)):
        ids, seg = data.input_ids[r][real[r]].tolist(), data.token_type_ids[r][real[r]].tolist()
        a = {i for i, s in zip(ids, seg) if s == 0} - ignore
        b = {i for i, s in zip(ids, seg) if s == 1} - ignore
        scores[r] = len(a & b) / max(len(a | b), 1)
    return scores


def topic_baseline(train: PretrainingData, tests: dict[str, PretrainingData], stopwords: int = 100
                   ) -> dict[str, Any]:
    """NSP without a model: call a pair IsNext when A and B share enough pieces
    (:func:`segment_overlap`, leaving out the ``stopwords`` most frequent pieces of
    ``train``), with the threshold that scores best on ``train``.

    It knows nothing of order or coherence, only "same topic?". Returns the
    ``threshold``, its accuracy on ``train`` and on each set of ``tests``.
    """
    def accuracy(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> float:
        return float((torch.where(scores >= threshold, IS_NEXT, NOT_NEXT) == labels).float().mean())

    ignore = frequent_pieces(train, stopwords)
    scores = segment_overlap(train, ignore)
    candidates = scores.quantile(torch.linspace(0, 1, 201)).unique().tolist()
    best = max(candidates, key=lambda t: accuracy(scores, train.next_sentence_label, t))
    result: dict[str, Any] = {"threshold": best, "train": accuracy(scores, train.next_sentence_label, best)}
    for name, data in tests.items():
        result[name] = accuracy(segment_overlap(data, ignore), data.next_sentence_label, best)
    return result


def fill_in_the_blank(model, tokenizer, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """The top-``k`` pieces (and probabilities) at each ``[MASK]`` in ``text``.

    >>> fill_in_the_blank(model, tok, "The capital of France is [MASK].")  # doctest: +SKIP
    [[('paris', 0.41), ...]]
    """
    enc = tokenizer.encode(text)
    ids = torch.tensor([enc.ids])
    positions = (ids[0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(positions) == 0:
        raise ValueError(f"no [MASK] in {text!r}; write [MASK] where the model should fill in a word")
    with eval_mode(model):
        logits = model(ids.to(next(model.parameters()).device)).mlm_logits[0, positions].float()
    probs = logits.softmax(-1)
    top = probs.topk(k, dim=-1)
    return [[(tokenizer.ids_to_tokens[int(i)], float(p)) for p, i in zip(ps, ix)]
            for ps, ix in zip(top.values, top.indices)]


@torch.no_grad()
def nearest_tokens(model, tokenizer, word: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` vocabulary pieces whose input embeddings are closest (cosine) to ``word``'s."""
    if word not in tokenizer.vocab:
        raise KeyError(f"{word!r} is not a piece of this vocabulary; try a frequent whole word")
    emb = model.bert.embeddings.word_embeddings.weight.float()
    emb = torch.nn.functional.normalize(emb, dim=-1)
    sims = emb @ emb[tokenizer.vocab[word]]
    sims[tokenizer.vocab[word]] = -2.0
    sims[tokenizer.all_special_ids] = -2.0
    top = sims.topk(k)
    return [(tokenizer.ids_to_tokens[int(i)], float(s)) for s, i in zip(top.values, top.indices)]


@torch.no_grad()
def class_cohesion(model, tokenizer, words: Sequence[str]) -> dict[str, Any]:
    """How much a class of words (nationalities, months, ...) has drawn together in the input
    embeddings: the chance that two members of the class are closer (cosine) than a member and
    any other piece, an AUC over every such comparison (0.5: no closer than random pieces;
    1.0: every member's nearest pieces are the other members). Words that are not a single
    piece of the vocabulary are left out (``used`` lists those that count); at least two must be."""
    used = [w for w in dict.fromkeys(words) if w in tokenizer.vocab]
    if len(used) < 2:
        raise ValueError(f"class_cohesion needs at least two words that are pieces of the vocabulary; "
                         f"of {list(words)} these are: {used}")
    emb = torch.nn.functional.normalize(model.bert.embeddings.word_embeddings.weight.float(), dim=-1)
    ids = torch.tensor([tokenizer.vocab[w] for w in used])
    sims = emb[ids] @ emb.T                                   # (members, vocab)
    within = sims[:, ids][~torch.eye(len(ids), dtype=torch.bool)]
    others = torch.ones(emb.shape[0], dtype=torch.bool)
    others[ids] = False
    others[tokenizer.all_special_ids] = False
    outside = sims[:, others].flatten()
    # AUC by ranks (Mann-Whitney): the share of (within, outside) pairs in which within is larger.
    ranks = torch.cat([within, outside]).argsort().argsort().double() + 1
    n_in, n_out = len(within), len(outside)
    auc = (ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out)
    return {"auc": float(auc), "used": used, "within": float(within.mean()), "outside": float(outside.mean())}
