"""Retrieval (chapter 6c): find the one document a query is about, and score how well it was found.

* :class:`BM25`: the classic word-count ranking (Robertson et al.), written out; the same
  scores as ``rank_bm25.BM25Okapi`` (``tests/test_retrieval.py``);
* :func:`dense_search`: the ``k`` documents whose embeddings have the highest dot product with
  the query's (cosine similarity when both are normalised), by brute force;
* :func:`hybrid_scores`: BM25 and dense scores, each standardised per query, mixed;
* :func:`top_k`, :func:`hard_negatives`: rankings from scores, and the best-ranked wrong documents;
* metrics: :func:`recall_at_k`, :func:`mrr_at_k` and :func:`retrieval_scores`, for the book's
  task where each query has exactly one relevant document;
* :func:`cached_embeddings`: corpus embeddings kept in the cache, so an encoder embeds a corpus once.

The encoders themselves (bi-encoder, cross-encoder) are in :mod:`bertmini.variants.sbert`.

Not handled: queries with several relevant documents or graded relevance (nDCG), stemming and
stop words in BM25, approximate indexes (FAISS; the chapter shows one), and corpora whose
embeddings do not fit in memory.
"""
from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence

import torch

from . import runtime
from .tokenization import basic_tokenize

__all__ = ["BM25", "bm25_tokenize", "dense_search", "top_k", "hybrid_scores", "hard_negatives",
           "recall_at_k", "mrr_at_k", "retrieval_scores", "cached_embeddings"]


def _check_corpus(corpus: Sequence, what: str) -> None:
    if isinstance(corpus, (str, bytes)):
        raise TypeError(f"{what} expects a list of documents, got one string {corpus!r:.40}; wrap it in a list")
    if len(corpus) == 0:
        raise ValueError(f"{what}: the corpus is empty; give at least one document to search")


def _check_k(k: int, n_docs: int, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{what}: k must be a positive int, got {k!r}")
    if k > n_docs:
        raise ValueError(f"{what}: k={k} is larger than the corpus ({n_docs} documents); "
                         f"ask for at most k={n_docs}, or search a larger corpus")
    return k


# ------------------------------------------------------------------ BM25
def bm25_tokenize(text: str) -> list[str]:
    """The words BM25 counts: BERT's basic tokenizer (lower case, accents and punctuation split
    off), punctuation dropped."""
    return [w for w in basic_tokenize(text) if any(ch.isalnum() for ch in w)]


class BM25:
    """Okapi BM25 over a tokenized corpus, as ``rank_bm25.BM25Okapi`` computes it.

    For a query word ``w`` in document ``d`` (``tf`` times, ``|d|`` words, ``avgdl`` on average)::

        idf(w) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))

    summed over the query's words (a repeated query word counts each time). ``idf(w) =
    log((N - n(w) + 0.5) / (n(w) + 0.5))`` for ``n(w)`` of the ``N`` documents holding ``w``; a
    word in more than half the documents would get a negative idf, so it gets ``epsilon`` times
    the mean idf instead. ``k1`` saturates repeated words, ``b`` discounts long documents.
    """

    def __init__(self, corpus: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75,
                 epsilon: float = 0.25):
        _check_corpus(corpus, "BM25")
        if isinstance(corpus[0], str):
            raise TypeError("BM25 takes tokenized documents (lists of words), e.g. "
                            "[bm25_tokenize(text) for text in texts]")
        self.k1, self.b = k1, b
        self.doc_len = torch.tensor([len(d) for d in corpus], dtype=torch.float64)
        self.avgdl = float(self.doc_len.mean())
        self.postings: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)  # word -> (doc, tf)
        for i, doc in enumerate(corpus):
            for word, tf in collections.Counter(doc).items():
                self.postings[word].append((i, tf))
        n = len(corpus)
        idf = {w: math.log(n - len(p) + 0.5) - math.log(len(p) + 0.5) for w, p in self.postings.items()}
        floor = epsilon * sum(idf.values()) / len(idf)
        self.idf = {w: v if v >= 0 else floor for w, v in idf.items()}

    def __len__(self) -> int:
        return len(self.doc_len)

    def get_scores(self, query: Sequence[str]) -> torch.Tensor:
        """One score per document (float64), for a tokenized query."""
        if isinstance(query, str):
            raise TypeError("BM25.get_scores takes a tokenized query (a list of words), e.g. bm25_tokenize(query)")
        scores = torch.zeros(len(self), dtype=torch.float64)
        norm = self.k1 * (1 - self.b + self.b * self.doc_len / self.avgdl)
        for word in query:
            if word not in self.postings:
                continue
            docs, tfs = zip(*self.postings[word])
            docs, tfs = torch.tensor(docs), torch.tensor(tfs, dtype=torch.float64)
            scores[docs] += self.idf[word] * tfs * (self.k1 + 1) / (tfs + norm[docs])
        return scores

    def search(self, queries: Sequence[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, indices)`` of the ``k`` best documents for each query text."""
        _check_k(k, len(self), "BM25.search")
        return top_k(self.score_all(queries), k)

    def score_all(self, queries: Sequence[str]) -> torch.Tensor:
        """A ``(len(queries), len(corpus))`` matrix of scores for query *texts*."""
        _check_corpus(queries, "BM25.score_all (queries)")
        rows = []
        for q in queries:
            words = bm25_tokenize(q)
            if not words:
                raise ValueError(f"the query {q!r:.60} has no words to count; give a non-empty query")
            rows.append(self.get_scores(words))
        return torch.stack(rows)


# ------------------------------------------------------------------ dense search
def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, indices)`` of the ``k`` highest scores in each row, best first."""
    _check_k(k, scores.shape[-1], "top_k")
    return torch.topk(scores, k, dim=-1)


def dense_search(query_embeddings: torch.Tensor, doc_embeddings: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force: every query against every document, ``q @ d.T``, then the ``k`` best.

    With normalised embeddings the score is the cosine similarity. The cost grows with the corpus
    (``len(docs) * hidden`` multiply-adds per query); an approximate index trades a little recall
    for much less."""
    if doc_embeddings.dim() != 2 or doc_embeddings.shape[0] == 0:
        raise ValueError(f"dense_search: the corpus is empty or not a (documents, hidden) matrix "
                         f"(shape {tuple(doc_embeddings.shape)}); embed at least one document")
    if query_embeddings.dim() == 1:
        query_embeddings = query_embeddings.unsqueeze(0)
    if query_embeddings.shape[-1] != doc_embeddings.shape[-1]:
        raise ValueError(f"dense_search: queries are {query_embeddings.shape[-1]}-dimensional, documents "
                         f"{doc_embeddings.shape[-1]}: embed both with the same model")
    return top_k(query_embeddings.float() @ doc_embeddings.float().T, k)


def hybrid_scores(bm25: torch.Tensor, dense: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
    """``weight * z(dense) + (1 - weight) * z(bm25)``, each score standardised over the corpus
    for each query (``z``: minus the row's mean, over its standard deviation), so that the two
    scales (BM25: 0 to 30 or so, cosine: -1 to 1) mix evenly."""
    if bm25.shape != dense.shape:
        raise ValueError(f"hybrid_scores: BM25 scores {tuple(bm25.shape)} and dense scores "
                         f"{tuple(dense.shape)} differ; score the same queries against the same corpus")
    if not 0 <= weight <= 1:
        raise ValueError(f"hybrid_scores: weight must be in [0, 1], got {weight!r}")

    def z(s: torch.Tensor) -> torch.Tensor:
        s = s.double()
        return (s - s.mean(-1, keepdim=True)) / s.std(-1, keepdim=True).clamp_min(1e-12)

    return weight * z(dense) + (1 - weight) * z(bm25)


def hard_negatives(ranking: torch.Tensor, relevant: Sequence[int], n: int = 1) -> list[list[int]]:
    """For each query, the ``n`` best-ranked documents that are *not* its relevant one: the
    mistakes a ranker is most tempted by, which make the most useful negatives for training."""
    if ranking.shape[1] < n + 1:
        raise ValueError(f"hard_negatives: a ranking of {ranking.shape[1]} documents cannot give {n} "
                         "negatives besides the relevant one; rank more documents")
    return [[d for d in row if d != gold][:n] for row, gold in zip(ranking.tolist(), relevant)]


# ------------------------------------------------------------------ metrics
def _ranks(ranking: torch.Tensor, relevant: Sequence[int], k: int) -> torch.Tensor:
    """The 1-based rank of each query's relevant document in its top ``k``, or 0 if absent."""
    ranking = torch.as_tensor(ranking)
    if ranking.dim() != 2 or ranking.shape[0] != len(relevant):
        raise ValueError(f"a ranking of shape {tuple(ranking.shape)} for {len(relevant)} relevant documents; "
                         "pass one row of document indices per query, best first")
    if len(relevant) == 0:
        raise ValueError("no queries to score")
    if ranking.shape[1] < k:
        raise ValueError(f"the rankings hold {ranking.shape[1]} documents per query, fewer than k={k}")
    hits = ranking[:, :k] == torch.as_tensor(list(relevant)).unsqueeze(1)
    positions = torch.arange(1, k + 1).expand_as(hits)
    return (hits * positions).sum(1)


def recall_at_k(ranking: torch.Tensor, relevant: Sequence[int], k: int) -> float:
    """The fraction of queries whose relevant document is among their first ``k`` results."""
    return float((_ranks(ranking, relevant, k) > 0).double().mean())


def mrr_at_k(ranking: torch.Tensor, relevant: Sequence[int], k: int = 10) -> float:
    """Mean reciprocal rank: ``1 / rank`` of the relevant document, 0 if it is not in the first
    ``k``, averaged over the queries."""
    ranks = _ranks(ranking, relevant, k).double()
    return float(torch.where(ranks > 0, 1 / ranks.clamp_min(1), torch.zeros_like(ranks)).mean())


def retrieval_scores(ranking: torch.Tensor, relevant: Sequence[int]) -> dict[str, float]:
    """The chapter's three numbers: ``recall_at_1``, ``recall_at_10`` and ``mrr_at_10``."""
    return {"recall_at_1": recall_at_k(ranking, relevant, 1), "recall_at_10": recall_at_k(ranking, relevant, 10),
            "mrr_at_10": mrr_at_k(ranking, relevant, 10)}


# ------------------------------------------------------------------ embeddings kept in the cache
def cached_embeddings(name: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``compute()`` (a dict of tensors) saved as ``<cache>/embeddings/<name>.safetensors`` the first
    time, loaded from there afterwards. ``name`` must say everything the tensors depend on (the
    model, its numeric path, the corpus, the length): nothing checks that it does. A damaged
    file is computed again."""
    from safetensors import SafetensorError
    from safetensors.torch import load, save

    path = runtime.cache_dir() / "embeddings" / f"{runtime.cache_name(name, 'embedding name')}.safetensors"
    if path.is_file():
        try:
            return load(path.read_bytes())
        except (SafetensorError, OSError, ValueError):
            pass
    tensors = compute()
    runtime.atomic_write_bytes(path, save({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}))
    return tensors
