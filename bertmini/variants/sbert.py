"""Sentence-BERT (Reimers and Gurevych, 2019): BERT as a sentence embedder, and as a reranker (chapter 6c).

BERT gives a vector per token; search wants one per text, comparable by a dot product. Sentence-BERT
gets it in three steps, each a few lines here:

* **pooling**: :func:`mean_pooling` (the average of the real tokens' vectors; the paper's best) or
  :func:`cls_pooling` (the final ``[CLS]`` vector), then L2-normalised, in :func:`encode_sentences`;
* **a siamese network trained for it**: :class:`BiEncoder` runs one encoder over the query and
  over the document and is trained with :func:`multiple_negatives_ranking_loss`, the cross-entropy
  over scaled cosine similarities in which every *other* document of the batch is a negative
  (``sentence-transformers``' ``MultipleNegativesRankingLoss``); :class:`PairBatches` makes its batches;
* **a cross-encoder to rerank**: a :class:`~bertmini.task_heads.BertForSequenceClassification` that
  reads ``[CLS] query [SEP] document [SEP]`` together (chapter 5b's pair classifier), trained on
  relevant pairs and hard negatives (:func:`cross_encoder_examples`); :func:`rerank` reorders a
  bi-encoder's top ``k`` by its scores, alone or mixed with the bi-encoder's.

The search itself, BM25 and the metrics are in :mod:`bertmini.retrieval`.

Not handled: max pooling and weighted-mean pooling, asymmetric query/document encoders, prompts or
instructions prepended to queries, Matryoshka and quantised embeddings, duplicate texts inside a
batch (a duplicate is a false negative for the loss: deduplicate the pairs first), and cross-encoders
trained with a listwise loss.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertmini.finetuning import Batches, _check_texts, collate, encode_classification, predict_logits

POOLINGS = ("mean", "cls")

__all__ = ["POOLINGS", "mean_pooling", "cls_pooling", "pool", "embed", "encode_sentences",
           "multiple_negatives_ranking_loss", "BiEncoder", "BiEncoderOutput", "PairBatches",
           "cross_encoder_examples", "cross_encoder_scores", "rerank"]


# ------------------------------------------------------------------ pooling
def mean_pooling(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the vectors of the real tokens (``[CLS]`` and ``[SEP]`` included, padding not)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def cls_pooling(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The final vector of ``[CLS]``, the first token."""
    return last_hidden_state[:, 0]


def _check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; use one of {POOLINGS}")
    return pooling


def pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """``mean_pooling`` or ``cls_pooling`` by name."""
    fn = mean_pooling if _check_pooling(pooling) == "mean" else cls_pooling
    return fn(last_hidden_state, attention_mask)


def _encoder_of(model: nn.Module) -> nn.Module:
    """The encoder inside a model with a head (``.bert``) or a :class:`BiEncoder`."""
    return getattr(model, "bert", model)


def embed(model: nn.Module, batch: dict[str, torch.Tensor], pooling: str = "mean",
          normalize: bool = True) -> torch.Tensor:
    """One vector per row of a padded batch (``input_ids``, ``attention_mask``, optional
    ``token_type_ids``), with gradients: what training and :func:`encode_sentences` both call."""
    hidden = _encoder_of(model)(batch["input_ids"], token_type_ids=batch.get("token_type_ids"),
                                attention_mask=batch["attention_mask"]).last_hidden_state
    vectors = pool(hidden, batch["attention_mask"], pooling)
    return F.normalize(vectors, p=2, dim=-1) if normalize else vectors


def _check_lengths(tokenizer, texts: Sequence[str], max_length: int) -> None:
    for i, text in enumerate(texts):
        n = len(tokenizer.tokenize(text)) + 2
        if n > max_length:
            raise ValueError(f"text {i} ({text[:40]!r}...) is {n} tokens with [CLS] and [SEP], longer than the "
                             f"{max_length} the model reads; shorten it (a query should say what it looks for "
                             "in a sentence or two), or pass truncation=True to cut it")


def encode_sentences(model: nn.Module, tokenizer, texts: Sequence[str], *, pooling: str | Sequence[str] = "mean",
                     normalize: bool = True, max_length: int = 256, batch_size: int = 64,
                     truncation: bool = True, amp: str | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
    """A ``(len(texts), hidden)`` float32 tensor: each text's pooled, L2-normalised embedding.

    Texts are cut to ``max_length`` tokens (as ``sentence-transformers`` does; ``truncation=False``
    makes an over-long text an error instead, for queries) and embedded in batches of similar
    length, so little is spent on padding. ``pooling`` may name several poolings, e.g.
    ``("cls", "mean")``: one forward pass then gives a dict of both. ``amp`` is the numeric path
    (:func:`bertmini.train.resolve_amp`: ``"auto"`` is bf16 where the CPU or GPU has it natively);
    ``None`` is float32.
    """
    from bertmini import runtime
    from bertmini.train import resolve_amp

    _check_texts(texts, "encode_sentences")
    poolings = [pooling] if isinstance(pooling, str) else list(pooling)
    for p in poolings:
        _check_pooling(p)
    if len(texts) == 0:
        raise ValueError("encode_sentences: no texts given; pass a list of at least one text")
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise ValueError(f"encode_sentences: text {empty[0]} is empty ({texts[empty[0]]!r}); every text needs words")
    encoder = _encoder_of(model)
    limit = encoder.config.max_position_embeddings
    if max_length > limit:
        raise ValueError(f"max_length={max_length} is more than this model's {limit} positions; "
                         f"use max_length <= {limit}")
    if not truncation:
        _check_lengths(tokenizer, texts, max_length)
    examples = encode_classification(tokenizer, texts, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: -len(examples[i]["input_ids"]))
    device = next(encoder.parameters()).device
    dtype = resolve_amp(amp, device)
    out = {p: torch.empty(len(texts), encoder.config.hidden_size) for p in poolings}
    with runtime.eval_mode(encoder), (torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()):
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in rows]).items()}
            hidden = encoder(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                             attention_mask=batch["attention_mask"]).last_hidden_state.float()
            for p in poolings:
                vectors = pool(hidden, batch["attention_mask"], p)
                out[p][rows] = (F.normalize(vectors, p=2, dim=-1) if normalize else vectors).cpu()
    return out[pooling] if isinstance(pooling, str) else out


# ------------------------------------------------------------------ training a bi-encoder
def multiple_negatives_ranking_loss(queries: torch.Tensor, docs: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """In-batch negatives: query ``i``'s document is ``docs[i]``; every other row of ``docs`` (the
    other queries' documents, and any extra hard negatives appended after them) is a negative.

    ``cross_entropy(scale * cos(queries, docs), [0, 1, ..., n-1])``. The cosine lies in [-1, 1], so
    without ``scale`` (20, a temperature of 0.05) the softmax could hardly prefer one document."""
    if docs.shape[0] < queries.shape[0]:
        raise ValueError(f"{queries.shape[0]} queries but only {docs.shape[0]} documents; the first "
                         f"{queries.shape[0]} documents must be the queries' own, in order")
    scores = scale * F.normalize(queries.float(), dim=-1) @ F.normalize(docs.float(), dim=-1).T
    return F.cross_entropy(scores, torch.arange(len(queries), device=scores.device))


@dataclass
class BiEncoderOutput:
    loss: torch.Tensor
    scores: torch.Tensor  # (queries, documents), scaled cosine similarities


class BiEncoder(nn.Module):
    """Sentence-BERT's siamese network: the *same* encoder (``bert``) embeds the query and the
    document, pooled; the loss is :func:`multiple_negatives_ranking_loss` over the batch.
    A batch from :class:`PairBatches` goes in as ``model(**batch)``, so :func:`bertmini.train.train`
    trains it like any other model."""

    def __init__(self, encoder: nn.Module, pooling: str = "mean", scale: float = 20.0):
        super().__init__()
        self.bert, self.pooling, self.scale = _encoder_of(encoder), _check_pooling(pooling), scale

    def forward(self, query_input_ids, query_attention_mask, doc_input_ids, doc_attention_mask,
                query_token_type_ids=None, doc_token_type_ids=None) -> BiEncoderOutput:
        q = embed(self, {"input_ids": query_input_ids, "attention_mask": query_attention_mask,
                         "token_type_ids": query_token_type_ids}, self.pooling, normalize=False)
        d = embed(self, {"input_ids": doc_input_ids, "attention_mask": doc_attention_mask,
                         "token_type_ids": doc_token_type_ids}, self.pooling, normalize=False)
        loss = multiple_negatives_ranking_loss(q, d, self.scale)
        scores = self.scale * F.normalize(q.float(), dim=-1) @ F.normalize(d.float(), dim=-1).T
        return BiEncoderOutput(loss, scores.detach())


class PairBatches(Batches):
    """Batches of (query, document) pairs for :class:`BiEncoder`: each side padded to its own longest
    row, keys prefixed ``query_`` and ``doc_``. Shuffled per epoch like :class:`~bertmini.finetuning.Batches`
    (from torch's global RNG, which ``train`` seeds)."""

    def __init__(self, tokenizer, queries: Sequence[str], docs: Sequence[str], batch_size: int,
                 max_length: int = 128, shuffle: bool = True):
        _check_texts(queries, "PairBatches queries=")
        _check_texts(docs, "PairBatches docs=")
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries but {len(docs)} documents; pass one document per query")
        q = encode_classification(tokenizer, queries, max_length=max_length)
        d = encode_classification(tokenizer, docs, max_length=max_length)
        super().__init__(list(zip(q, d)), batch_size, shuffle=shuffle)

    def collate_batch(self, chunk: Sequence[tuple[dict, dict]]) -> dict[str, torch.Tensor]:
        q, d = collate([a for a, _ in chunk]), collate([b for _, b in chunk])
        return {**{f"query_{k}": v for k, v in q.items()}, **{f"doc_{k}": v for k, v in d.items()}}


# ------------------------------------------------------------------ the cross-encoder
def cross_encoder_examples(tokenizer, queries: Sequence[str], positives: Sequence[str],
                           negatives: Sequence[Sequence[str]], max_length: int = 128) -> list[dict]:
    """Training pairs for a cross-encoder: ``(query, its document)`` labelled 1 and ``(query, n)``
    labelled 0 for each of its hard negatives ``n``, encoded by
    :func:`~bertmini.finetuning.encode_classification` as ``[CLS] query [SEP] document [SEP]``."""
    if not len(queries) == len(positives) == len(negatives):
        raise ValueError(f"{len(queries)} queries, {len(positives)} positives and {len(negatives)} lists of "
                         "negatives; pass one of each per query")
    texts, docs, labels = [], [], []
    for query, positive, negs in zip(queries, positives, negatives):
        for doc, label in [(positive, 1), *((n, 0) for n in negs)]:
            texts.append(query)
            docs.append(doc)
            labels.append(label)
    return encode_classification(tokenizer, texts, labels, pairs=docs, num_labels=2, max_length=max_length)


def cross_encoder_scores(model: nn.Module, tokenizer, queries: Sequence[str], docs: Sequence[str], *,
                         max_length: int = 128, batch_size: int = 64, amp: str | None = None) -> torch.Tensor:
    """One score per (query, document) pair: the log-odds ``logit[1] - logit[0]`` that the
    document is the query's."""
    from bertmini.train import resolve_amp

    examples = encode_classification(tokenizer, queries, pairs=docs, max_length=max_length)
    device = next(model.parameters()).device
    dtype = resolve_amp(amp, device)
    with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
        logits = torch.stack(predict_logits(model, examples, batch_size))
    return logits[:, 1] - logits[:, 0]


def rerank(model: nn.Module, tokenizer, queries: Sequence[str], doc_texts: Sequence[str],
           candidates: torch.Tensor, *, first_stage: torch.Tensor | None = None, weight: float = 0.5,
           max_length: int = 128, batch_size: int = 64, amp: str | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, ranking)``: each query's ``k`` candidate documents (a ``(queries, k)`` tensor of
    indices into ``doc_texts``, from a first-stage retriever) reordered by the cross-encoder, best first.

    With ``first_stage`` (the retriever's ``(queries, k)`` scores of the candidates) the order is by
    :func:`~bertmini.retrieval.hybrid_scores`: ``weight`` times the cross-encoder's score plus
    ``1 - weight`` times the retriever's, each standardised over the query's candidates."""
    from bertmini.retrieval import hybrid_scores

    _check_texts(queries, "rerank queries=")
    if candidates.dim() != 2 or candidates.shape[0] != len(queries):
        raise ValueError(f"candidates of shape {tuple(candidates.shape)} for {len(queries)} queries; pass "
                         "a (queries, k) tensor of document indices, e.g. dense_search(...)[1]")
    k = candidates.shape[1]
    pairs_q = [q for q in queries for _ in range(k)]
    pairs_d = [doc_texts[i] for i in candidates.reshape(-1).tolist()]
    scores = cross_encoder_scores(model, tokenizer, pairs_q, pairs_d, max_length=max_length,
                                  batch_size=batch_size, amp=amp).reshape(len(queries), k)
    if first_stage is not None:
        scores = hybrid_scores(first_stage, scores, weight)
    order = scores.argsort(dim=1, descending=True, stable=True)
    return scores.gather(1, order), candidates.gather(1, order)
