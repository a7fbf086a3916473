"""Chapter 6c's retrieval: BM25 against ``rank_bm25``, dense search, the hybrid, and the metrics
on cases worked out by hand; bad input named."""
import pytest
import torch

from bertmini import data
from bertmini.retrieval import (BM25, bm25_tokenize, cached_embeddings, dense_search, hard_negatives,
                                hybrid_scores, mrr_at_k, recall_at_k, retrieval_scores, top_k)


# ------------------------------------------------------------------ BM25
@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (1.2, 0.0), (0.9, 1.0)])
def test_bm25_equals_rank_bm25_on_real_articles(k1, b):
    from rank_bm25 import BM25Okapi

    articles = data.wiki_articles("test")[:300]
    corpus = [bm25_tokenize(a.text) for a in articles]
    ours, theirs = BM25(corpus, k1=k1, b=b), BM25Okapi(corpus, k1=k1, b=b)
    for a in articles[:40]:
        query = bm25_tokenize(a.description or a.title)
        assert torch.allclose(ours.get_scores(query), torch.from_numpy(theirs.get_scores(query)), atol=1e-9)
    assert ours.idf == pytest.approx(theirs.idf)


def test_bm25_negative_idf_gets_the_floor():
    from rank_bm25 import BM25Okapi

    corpus = [["the", "cat"], ["the", "dog"], ["the", "cow", "the"], ["a", "bird"]]
    ours, theirs = BM25(corpus), BM25Okapi(corpus)
    assert ours.idf["the"] == pytest.approx(theirs.idf["the"]) and ours.idf["the"] > 0
    for q in (["the"], ["the", "the", "cow"], ["unknown"], ["bird", "cat"]):
        assert torch.allclose(ours.get_scores(q), torch.from_numpy(theirs.get_scores(q)).double())


def test_bm25_search_ranks_the_matching_document_first():
    texts = ["The cat sat on the mat.", "Dogs bark at night.", "A treatise on cats and their mats."]
    bm25 = BM25([bm25_tokenize(t) for t in texts])
    scores, idx = bm25.search(["dogs at night"], k=2)
    assert idx[0, 0] == 1 and scores.shape == (1, 2)


def test_bm25_tokenize_drops_punctuation_and_lowercases():
    assert bm25_tokenize("Héllo, World!  It's 1989.") == ["hello", "world", "it", "s", "1989"]


def test_bm25_bad_input():
    with pytest.raises(ValueError, match="corpus is empty"):
        BM25([])
    with pytest.raises(TypeError, match="tokenized documents"):
        BM25(["a text, not a list of words"])
    bm25 = BM25([["a", "b"], ["c"]])
    with pytest.raises(ValueError, match="no words"):
        bm25.score_all(["  ?! "])
    with pytest.raises(ValueError, match="larger than the corpus"):
        bm25.search(["a"], k=3)
    with pytest.raises(TypeError, match="tokenized query"):
        bm25.get_scores("a b")


# ------------------------------------------------------------------ dense search, hybrid, negatives
def test_dense_search_is_brute_force_cosine():
    g = torch.Generator().manual_seed(0)
    docs = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    scores, idx = dense_search(queries, docs, k=7)
    full = torch.nn.functional.cosine_similarity(queries[:, None], docs[None], dim=-1)
    assert torch.equal(idx, full.argsort(dim=1, descending=True)[:, :7])
    assert torch.allclose(scores, full.gather(1, idx), atol=1e-6)
    s1, i1 = dense_search(queries[0], docs, k=1)   # one query as a vector
    assert i1.shape == (1, 1) and i1[0, 0] == idx[0, 0]


def test_dense_search_bad_input():
    docs = torch.randn(4, 8)
    with pytest.raises(ValueError, match="larger than the corpus"):
        dense_search(torch.randn(2, 8), docs, k=5)
    with pytest.raises(ValueError, match="corpus is empty"):
        dense_search(torch.randn(2, 8), torch.empty(0, 8), k=1)
    with pytest.raises(ValueError, match="same model"):
        dense_search(torch.randn(2, 6), docs, k=1)
    with pytest.raises(ValueError, match="positive int"):
        top_k(torch.randn(2, 4), 0)


def test_hybrid_standardises_each_score():
    bm25 = torch.tensor([[10.0, 0.0, 5.0], [1.0, 2.0, 3.0]])
    dense = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    h = hybrid_scores(bm25, dense, weight=0.5)
    # row 0: z(bm25) = (1, -1, 0), z(dense) = (-1, 1, 0) -> a tie at 0 everywhere
    assert torch.allclose(h[0], torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(hybrid_scores(bm25, dense, weight=1.0)[1], torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), atol=1e-6)
    assert hybrid_scores(100 * bm25, dense).allclose(hybrid_scores(bm25, dense))  # scale-free
    with pytest.raises(ValueError, match="differ"):
        hybrid_scores(bm25, dense[:1])
    with pytest.raises(ValueError, match="weight"):
        hybrid_scores(bm25, dense, weight=1.5)


def test_hard_negatives_skip_the_relevant_document():
    ranking = torch.tensor([[3, 1, 2, 0], [0, 1, 2, 3]])
    assert hard_negatives(ranking, [3, 2], n=2) == [[1, 2], [0, 1]]
    with pytest.raises(ValueError, match="rank more documents"):
        hard_negatives(ranking[:, :2], [3, 2], n=2)


# ------------------------------------------------------------------ metrics, by hand
def test_metrics_by_hand():
    ranking = torch.tensor([[7, 1, 2], [4, 5, 6], [9, 8, 3], [0, 1, 2]])
    relevant = [7, 6, 8, 5]          # ranks 1, 3, 2 and absent
    assert recall_at_k(ranking, relevant, 1) == pytest.approx(1 / 4)
    assert recall_at_k(ranking, relevant, 2) == pytest.approx(2 / 4)
    assert recall_at_k(ranking, relevant, 3) == pytest.approx(3 / 4)
    assert mrr_at_k(ranking, relevant, 3) == pytest.approx((1 + 1 / 3 + 1 / 2 + 0) / 4)
    assert mrr_at_k(ranking, relevant, 2) == pytest.approx((1 + 0 + 1 / 2 + 0) / 4)  # rank 3 is past k=2


def test_retrieval_scores_names_and_bad_input():
    ranking = torch.arange(10).repeat(2, 1)
    scores = retrieval_scores(ranking, [0, 9])
    assert scores == {"recall_at_1": 0.5, "recall_at_10": 1.0, "mrr_at_10": pytest.approx((1 + 0.1) / 2)}
    with pytest.raises(ValueError, match="fewer than k=10"):
        retrieval_scores(ranking[:, :5], [0, 9])
    with pytest.raises(ValueError, match="one row of document indices per query"):
        recall_at_k(ranking, [0], 1)


def test_cached_embeddings_computes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMINI_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"mean": torch.ones(3, 2)}

    a = cached_embeddings("corpus-x", compute)
    b = cached_embeddings("corpus-x", compute)
    assert len(calls) == 1 and torch.equal(a["mean"], b["mean"])
    (tmp_path / "embeddings" / "corpus-x.safetensors").write_bytes(b"damaged")
    cached_embeddings("corpus-x", compute)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="cannot name a file"):
        cached_embeddings("../x", compute)


def test_search_columns_side_by_side_and_explorer(monkeypatch):
    pytest.importorskip("ipywidgets")
    import IPython.display
    from bertmini import viz

    searchers = {"A": lambda q, k: [f"{q} {i}" for i in range(k)],
                 "B": lambda q, k: ["a very long title that does not fit in a column"][:k]}
    text = viz.search_columns("cat", searchers, k=3, width=12)
    lines = text.splitlines()
    assert lines[0] == "query: cat" and lines[1].split() == ["A", "B"]
    assert lines[2].startswith(" 1. cat 0") and "a very long…" in lines[2]
    assert lines[4].rstrip() == " 3. cat 2" and len(lines) == 5

    def refuse(q, k):
        raise ValueError("the query is empty")

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    box = viz.search_explorer({"A": refuse}, "")
    assert isinstance(shown[0], viz.KernelNote) and shown[1] is box, "the note must come above the widget"
    assert "the printed comparison after it" in shown[0]._repr_html_()
    assert "cannot search for this query: the query is empty" in box.children[1].outputs[0]["text"]
    box.children[0].value = "dog"   # typing a new query redraws
    assert "cannot search" in box.children[1].outputs[0]["text"]
