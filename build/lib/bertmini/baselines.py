"""Baselines a fine-tuned model must beat: a bag of words, and a linear probe on frozen features.

* :class:`LogisticRegression`: multinomial logistic regression fitted by full-batch
  L-BFGS, on dense or sparse features;
* :class:`BagOfWords`: which words occur, weighed by that logistic regression;
* :func:`encode_features`: one vector per example from an encoder that is *not*
  trained (the ``[CLS]`` state or the mean of the tokens), for a linear probe.

Not handled: word counts or tf-idf weights, n-grams, mini-batch fitting for data
that do not fit in memory, and class weights.
"""
from __future__ import annotations

import collections
import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bertmini import runtime
from bertmini.finetuning import collate
from bertmini.metrics import accuracy


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

        def closure():  # L-BFGS re-evaluates the loss during its line search
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


def encode_features(encoder: nn.Module, examples: Sequence[dict], pooling: str = "mean",
                    batch_size: int = 64) -> torch.Tensor:
    """Frozen features: one vector per example from an encoder that is not trained.
    ``pooling="cls"`` takes the final ``[CLS]`` state, ``"mean"`` averages the real
    tokens (what sentence-embedding models such as all-MiniLM are trained for).
    A model with a task head is read through its ``.bert`` encoder."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling={pooling!r}; use 'mean' or 'cls'")
    if len(examples) == 0:
        raise ValueError("encode_features: no examples")
    encoder = getattr(encoder, "bert", encoder)
    feats = []
    with runtime.eval_mode(encoder):
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i:i + batch_size])
            hidden = encoder(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
            if pooling == "cls":
                feats.append(hidden[:, 0])
            else:
                m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                feats.append((hidden * m).sum(1) / m.sum(1))
    return torch.cat(feats).float()
