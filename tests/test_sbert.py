"""Chapter 6c's Sentence-BERT: pooling against ``sentence-transformers`` on the real MiniLM, the
in-batch-negatives loss against its ``MultipleNegativesRankingLoss``, the bi-encoder's batches and
training step, the cross-encoder's pairs and reranking; bad input named. Nothing downloads:
``SentenceTransformer(data.minilm_path())`` reads the files the MiniLM package ships."""
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bertmini import data, runtime  # noqa: E402
from bertmini.config import BertConfig  # noqa: E402
from bertmini.hf import load_pretrained  # noqa: E402
from bertmini.model import BertModel  # noqa: E402
from bertmini.task_heads import BertForSequenceClassification  # noqa: E402
from bertmini.tokenization import BertTokenizer  # noqa: E402
from bertmini.train import TrainConfig, train  # noqa: E402
from bertmini.variants.sbert import (BiEncoder, PairBatches, cls_pooling, cross_encoder_examples,  # noqa: E402
                                     cross_encoder_scores, encode_sentences, mean_pooling,
                                     multiple_negatives_ranking_loss, rerank)

SENTENCES = ["Abraham Lincoln was the 16th president of the United States.", "species of bird", "ok",
             "Photosynthesis converts sunlight into chemical energy, which plants store as sugar. " * 12]


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(data.minilm_vocab_path())


@pytest.fixture(scope="module")
def minilm():
    return load_pretrained(data.minilm_path()).eval()


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(data.minilm_path()), device="cpu")


def tiny_encoder(seed=0):
    runtime.seed_everything(seed)
    return BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))


# ------------------------------------------------------------------ pooling vs sentence-transformers
def test_sentence_transformers_reads_the_packaged_pipeline(st_model):
    # modules.json (Transformer -> mean Pooling -> Normalize) and 1_Pooling/ come with minilm_path()
    assert (data.minilm_path() / "modules.json").is_file()
    assert [type(m).__name__ for m in st_model] == ["Transformer", "Pooling", "Normalize"]
    assert st_model[1].pooling_mode == "mean"


def test_minilm_embeddings_equal_sentence_transformers(minilm, tok, st_model):
    assert st_model.max_seq_length == 256   # the last sentence is cut there, by both
    theirs = st_model.encode(SENTENCES, convert_to_tensor=True, batch_size=3)
    ours = encode_sentences(minilm, tok, SENTENCES, batch_size=3)
    assert ours.shape == (len(SENTENCES), 384)
    assert (ours - theirs).abs().max() <= 1e-5


def test_cls_pooling_equals_sentence_transformers_cls(minilm, tok, st_model):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling

    transformer = st_model[0]
    cls_model = SentenceTransformer(modules=[transformer, Pooling(384, pooling_mode="cls"), Normalize()], device="cpu")
    theirs = cls_model.encode(SENTENCES, convert_to_tensor=True)
    both = encode_sentences(minilm, tok, SENTENCES, pooling=("cls", "mean"))
    assert (both["cls"] - theirs).abs().max() <= 1e-5
    assert torch.equal(both["mean"], encode_sentences(minilm, tok, SENTENCES))


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pooling(hidden, mask), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(cls_pooling(hidden, mask), torch.tensor([[1.0, 2.0]]))


def test_batch_order_does_not_change_embeddings(minilm, tok):
    one_by_one = torch.cat([encode_sentences(minilm, tok, [s]) for s in SENTENCES])
    assert torch.allclose(encode_sentences(minilm, tok, SENTENCES, batch_size=2), one_by_one, atol=1e-5)
    raw = encode_sentences(minilm, tok, SENTENCES[:2], normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))


def test_encode_sentences_bad_input(minilm, tok):
    with pytest.raises(ValueError, match="text 1 is empty"):
        encode_sentences(minilm, tok, ["fine", "  "])
    with pytest.raises(ValueError, match="no texts"):
        encode_sentences(minilm, tok, [])
    with pytest.raises(TypeError, match="wrap it in a list"):
        encode_sentences(minilm, tok, "one string")
    with pytest.raises(ValueError, match="longer than the 16 the model reads"):
        encode_sentences(minilm, tok, [SENTENCES[0] * 3], max_length=16, truncation=False)
    with pytest.raises(ValueError, match="more than this model's 512 positions"):
        encode_sentences(minilm, tok, ["x"], max_length=600)
    with pytest.raises(ValueError, match="pooling='max'"):
        encode_sentences(minilm, tok, ["x"], pooling="max")


# ------------------------------------------------------------------ the loss vs sentence-transformers
@pytest.mark.parametrize("n_docs,scale", [(6, 20.0), (10, 20.0), (6, 7.5)])
def test_loss_equals_multiple_negatives_ranking_loss(n_docs, scale):
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    g = torch.Generator().manual_seed(n_docs)
    queries, docs = torch.randn(6, 16, generator=g), torch.randn(n_docs, 16, generator=g)
    st_loss = MultipleNegativesRankingLoss(model=None, scale=scale)
    embeddings = [queries, docs[:6]] + ([docs[6:]] if n_docs > 6 else [])   # extra docs: hard negatives
    theirs = st_loss.compute_loss_from_embeddings(embeddings, labels=None)
    ours = multiple_negatives_ranking_loss(queries, docs, scale=scale)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each query's own document is itself: logits s * [[1, 0], [0, 1]] -> loss log(1 + e^-s)
    for s in (1.0, 5.0):
        assert multiple_negatives_ranking_loss(q, 3 * q, scale=s).item() == pytest.approx(math.log1p(math.exp(-s)))
    with pytest.raises(ValueError, match="the queries' own"):
        multiple_negatives_ranking_loss(q, q[:1])


# ------------------------------------------------------------------ the bi-encoder
def test_pair_batches_and_a_training_step_lower_the_loss(tok):
    queries = ["species of bird", "president of the united states", "chemical element", "capital of france"]
    docs = ["The robin is a small bird.", "Abraham Lincoln was a president.", "Iron is a chemical element.",
            "Paris is the capital and largest city of France."]
    batches = PairBatches(tok, queries, docs, batch_size=4, shuffle=False)
    batch = next(iter(batches))
    assert set(batch) == {"query_input_ids", "query_token_type_ids", "query_attention_mask",
                          "doc_input_ids", "doc_token_type_ids", "doc_attention_mask"}
    assert batch["query_input_ids"].shape[1] < batch["doc_input_ids"].shape[1]  # each side padded on its own
    model = BiEncoder(tiny_encoder())
    with torch.no_grad():
        before = model(**batch).loss.item()
    train(model, batches, TrainConfig(lr=3e-3, max_steps=15, warmup_steps=0, progress=False, amp=None))
    with torch.no_grad():
        out = model.eval()(**batch)
    assert out.loss.item() < before and out.scores.shape == (4, 4)
    assert torch.equal(out.scores.argmax(1), torch.arange(4))
    with pytest.raises(ValueError, match="one document per query"):
        PairBatches(tok, queries, docs[:3], batch_size=2)


def test_bi_encoder_loss_is_the_loss_of_its_embeddings(tok):
    encoder = tiny_encoder().eval()
    model = BiEncoder(encoder, pooling="cls", scale=10.0).eval()
    batch = next(iter(PairBatches(tok, ["a b", "c"], ["d e f", "g h"], batch_size=2, shuffle=False)))
    q = encode_sentences(encoder, tok, ["a b", "c"], pooling="cls", max_length=64)
    d = encode_sentences(encoder, tok, ["d e f", "g h"], pooling="cls", max_length=64)
    with torch.no_grad():
        assert torch.allclose(model(**batch).loss, multiple_negatives_ranking_loss(q, d, 10.0), atol=1e-5)


# ------------------------------------------------------------------ the cross-encoder
def test_cross_encoder_examples_label_positives_and_negatives(tok):
    ex = cross_encoder_examples(tok, ["q1", "q2"], ["pos one", "pos two"], [["neg a", "neg b"], ["neg c"]])
    assert [e["labels"] for e in ex] == [1, 0, 0, 1, 0]
    assert tok.decode(ex[1]["input_ids"]) == "q1 neg a"
    assert ex[0]["token_type_ids"][-1] == 1
    with pytest.raises(ValueError, match="one of each per query"):
        cross_encoder_examples(tok, ["q1"], ["p"], [])


def test_rerank_orders_candidates_by_the_cross_encoders_scores(tok):
    runtime.seed_everything(0)
    model = BertForSequenceClassification.from_encoder(tiny_encoder(), num_labels=2).eval()
    docs = ["alpha", "beta gamma", "delta", "epsilon zeta eta", "theta"]
    candidates = torch.tensor([[0, 1, 2], [4, 3, 1]])
    queries = ["first query", "second"]
    scores, ranking = rerank(model, tok, queries, docs, candidates, max_length=32)
    direct = cross_encoder_scores(model, tok, ["first query"] * 3, [docs[i] for i in (0, 1, 2)], max_length=32)
    assert torch.allclose(scores[0], direct.sort(descending=True).values, atol=1e-5)
    assert sorted(ranking[0].tolist()) == [0, 1, 2] and sorted(ranking[1].tolist()) == [1, 3, 4]
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    with pytest.raises(ValueError, match="queries"):
        rerank(model, tok, queries[:1], docs, candidates)
    # mixed with the first stage's scores: weight 1 is the cross-encoder's order, weight 0 the first stage's
    first = torch.tensor([[3.0, 2.0, 1.0], [0.9, 0.5, 0.1]])
    _, alone = rerank(model, tok, queries, docs, candidates, first_stage=first, weight=1.0, max_length=32)
    assert torch.equal(alone, ranking)
    _, kept = rerank(model, tok, queries, docs, candidates, first_stage=first, weight=0.0, max_length=32)
    assert torch.equal(kept, candidates)
