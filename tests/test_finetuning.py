"""Chapter 5: task heads, data preparation, batches, QA windows and spans, baselines, the recipe, save/load.

Parity is checked against the real thing: the heads against ``transformers``' heads
with the same weights, the QA windows and NER word alignment against
``transformers``' fast tokenizer (``stride`` / ``is_split_into_words``) on the real
vocabulary and the real data.
"""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bertmini import data, runtime  # noqa: E402
from bertmini.baselines import BagOfWords, LogisticRegression  # noqa: E402
from bertmini.config import IGNORE_INDEX, BertConfig  # noqa: E402
from bertmini.finetuning import (Batches, align_labels, collate, encode_classification, encode_ner,  # noqa: E402
                                 finetune, load_finetuned, make_batches, predict_logits, predict_tags,
                                 save_finetuned)
from bertmini.qa import best_span, encode_qa, predict_answers  # noqa: E402
from bertmini.task_heads import (BertForQuestionAnswering, BertForSequenceClassification,  # noqa: E402
                                 BertForTokenClassification, TaskOutput)
from bertmini.tokenization import BertTokenizer, to_hf_fast  # noqa: E402

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128)


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(data.minilm_vocab_path())


def tiny_config(**kw):
    return BertConfig(**{**TINY, **kw})


# ------------------------------------------------------------------ heads vs transformers
@pytest.mark.parametrize("name", ["sequence", "token", "qa"])
def test_heads_match_transformers(name):
    import transformers

    runtime.seed_everything(0)
    cfg = tiny_config()
    ours, theirs = {
        "sequence": (BertForSequenceClassification(cfg, num_labels=3), transformers.BertForSequenceClassification),
        "token": (BertForTokenClassification(cfg, num_labels=5), transformers.BertForTokenClassification),
        "qa": (BertForQuestionAnswering(cfg), transformers.BertForQuestionAnswering),
    }[name]
    hf_cfg = cfg.to_hf(num_labels=ours.num_labels)
    hf = theirs(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    ours.eval()
    ids = torch.randint(5, 1000, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    kw = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
    if name == "sequence":
        extra = dict(labels=torch.tensor([0, 2, 1]))
    elif name == "token":
        labels = torch.randint(0, 5, ids.shape)
        labels[:, 0] = -100
        extra = dict(labels=labels)
    else:
        extra = dict(start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([4, 2, 5]))
    a, b = ours(**kw, **extra), hf(**kw, **extra)
    if name == "qa":
        torch.testing.assert_close(a.start_logits, b.start_logits, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.end_logits, b.end_logits, atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-4)


def test_head_without_labels_has_no_loss():
    m = BertForSequenceClassification(tiny_config(), num_labels=2).eval()
    out = m(input_ids=torch.tensor([[101, 2000, 102]]))
    assert isinstance(out, TaskOutput) and out.loss is None and out.logits.shape == (1, 2)


def test_heads_reject_labels_outside_the_label_set():
    ids = torch.tensor([[101, 2000, 102]])
    with pytest.raises(ValueError, match="outside the label set"):
        BertForSequenceClassification(tiny_config(), num_labels=2)(input_ids=ids, labels=torch.tensor([2]))
    with pytest.raises(ValueError, match="outside the label set"):
        BertForTokenClassification(tiny_config(), num_labels=3)(input_ids=ids, labels=torch.tensor([[-100, 7, -100]]))
    with pytest.raises(ValueError, match="outside the label set"):
        BertForQuestionAnswering(tiny_config())(input_ids=ids, start_positions=torch.tensor([5]),
                                                end_positions=torch.tensor([1]))


def test_from_encoder_keeps_the_pretrained_weights():
    from bertmini.hf import load_pretrained

    enc = load_pretrained(data.minilm_path())
    m = BertForSequenceClassification.from_encoder(enc, num_labels=2)
    assert m.bert is enc and m.classifier.weight.abs().max() < 0.2
    with pytest.raises(TypeError, match="BertModel"):
        BertForSequenceClassification.from_encoder(m, num_labels=2)


# ------------------------------------------------------------------ data preparation
def test_align_labels_first_subtoken():
    assert align_labels([None, 0, 1, 1, 2, None], [3, 5, 0]) == [-100, 3, 5, -100, 0, -100]


def test_encode_ner_word_ids_match_transformers(tok):
    hf = to_hf_fast(tok)
    for words, tags in data.ner("train")[:200]:
        ex = encode_ner(tok, [words], [tags], label_list=data.ner_labels(), max_length=512)[0]
        enc = hf(words, is_split_into_words=True)
        assert ex["input_ids"] == enc["input_ids"]
        assert ex["word_ids"] == enc.word_ids()
        # exactly one labelled token per word, carrying that word's tag
        labelled = [l for l in ex["labels"] if l != -100]
        assert [data.ner_labels()[l] for l in labelled] == tags


def test_encode_ner_rejects_unknown_tags(tok):
    with pytest.raises(ValueError, match="not in the label list"):
        encode_ner(tok, [["Paris"]], [["B-city"]], label_list=data.ner_labels())


def test_encode_classification_pairs_and_bad_labels(tok):
    ex = encode_classification(tok, ["a cat"], [1], pairs=["a dog"], num_labels=2)[0]
    assert ex["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="outside the label set"):
        encode_classification(tok, ["fine", "bad"], [0, 2], num_labels=2)
    with pytest.raises(ValueError, match="one label per text"):
        encode_classification(tok, ["fine", "bad"], [0])


def test_collate_pads_dynamically():
    batch = collate([{"input_ids": [1, 2, 3], "token_type_ids": [0, 0, 0], "labels": [-100, 4, -100]},
                     {"input_ids": [1, 2], "token_type_ids": [0, 0], "labels": [-100, 1]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [1, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 4, -100], [-100, 1, -100]]


def test_collate_pads_ids_with_pad_id_labels_with_ignore_index():
    batch = collate([{"input_ids": [5, 6], "token_type_ids": [0, 1], "labels": [IGNORE_INDEX, 2],
                      "word_ids": [None, 0]},
                     {"input_ids": [5, 6, 7, 8], "token_type_ids": [0, 0, 1, 1], "labels": [IGNORE_INDEX, 1, 0, 3],
                      "word_ids": [None, 0, 1, 2]}], pad_token_id=9)
    assert list(batch) == ["input_ids", "token_type_ids", "attention_mask", "labels"], \
        "collate keeps only the model's inputs, in a fixed order"
    assert all(v.dtype == torch.long for v in batch.values())
    assert batch["input_ids"].tolist() == [[5, 6, 9, 9], [5, 6, 7, 8]], "ids pad with pad_token_id"
    assert batch["token_type_ids"].tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]], "segment ids pad with 0"
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, 1, 0, 3]], \
        "token labels pad with IGNORE_INDEX so the loss skips the padding"
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]], "the mask is 1 on real tokens only"
    spans = collate([{"input_ids": [1, 2], "start_positions": 1, "end_positions": 1},
                     {"input_ids": [1], "start_positions": 0, "end_positions": 0}])
    assert spans["start_positions"].tolist() == [1, 0] and spans["end_positions"].dtype == torch.long


def test_batches_are_one_shuffled_epoch_per_iter():
    examples = [{"input_ids": [i + 1], "labels": i} for i in range(10)]
    batches = make_batches(examples, 4)
    assert isinstance(batches, Batches) and len(batches) == 3
    torch.manual_seed(0)
    first = [b["labels"].tolist() for b in batches]
    torch.manual_seed(0)
    order = torch.randperm(10).tolist()
    assert first == [order[0:4], order[4:8], order[8:10]], "one torch.randperm per epoch, taken in order"
    assert sorted(sum([b["labels"].tolist() for b in batches], [])) == list(range(10)), "every example once"
    assert [b["labels"].tolist() for b in Batches(examples, 4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_empty_batches_are_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="no examples"):
        make_batches([], 32)
    with pytest.raises(ValueError, match="no examples"):
        predict_logits(BertForSequenceClassification(tiny_config()), [])


# ------------------------------------------------------------------ question answering
def test_qa_windows_match_transformers_stride(tok):
    hf = to_hf_fast(tok)
    several = 0
    for ex in data.qa("train")[:150]:
        windows = encode_qa(tok, [ex.question], [ex.context], [(ex.answer_text, ex.answer_start)],
                            max_length=96, stride=32)
        enc = hf(ex.question, ex.context, max_length=96, truncation="only_second", stride=32,
                 return_overflowing_tokens=True, return_offsets_mapping=True)
        assert [w["input_ids"] for w in windows] == enc["input_ids"]
        several += len(windows) > 1
        # every window that holds the answer points at tokens whose characters cover it exactly
        found = 0
        for w in windows:
            s, e = w["start_positions"], w["end_positions"]
            if s == 0:
                continue
            found += 1
            a, b = w["context_offsets"][s][0], w["context_offsets"][e][1]
            assert ex.context[a:b].lower() == ex.answer_text.lower()
        assert found >= 1
    assert several > 10  # the test really exercised the windowing


def test_qa_answer_not_in_context_is_an_error(tok):
    with pytest.raises(ValueError, match="does not occur in the context"):
        encode_qa(tok, ["What is X?"], ["X is a letter."], [("a number", 5)])
    with pytest.raises(ValueError, match="fix answer_start"):
        encode_qa(tok, ["What is X?"], ["X is a letter."], [("a letter", 0)])


def test_best_span_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = 12
        s, e = torch.randn(n, generator=g), torch.randn(n, generator=g)
        allowed = torch.rand(n, generator=g) > 0.3
        L = 4
        best = max(((s[i] + e[j]).item(), i, j) for i in range(n) for j in range(i, min(n, i + L))
                   if allowed[i] and allowed[j])
        i, j, score = best_span(s, e, allowed, max_answer_length=L)
        assert (i, j) == best[1:] and score == pytest.approx(best[0])


def test_predict_answers_maps_back_to_characters(tok):
    """An oracle model that scores the gold tokens highest must return the gold text
    from the original context, across windows."""
    examples = data.qa("validation")[:40]
    windows = encode_qa(tok, [x.question for x in examples], [x.context for x in examples],
                        [(x.answer_text, x.answer_start) for x in examples], max_length=64, stride=16)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.it = iter(windows)

        def forward(self, input_ids, token_type_ids=None, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, 2)
            for row in range(input_ids.shape[0]):
                w = next(self.it)
                if w["start_positions"]:
                    logits[row, w["start_positions"], 0] = 10
                    logits[row, w["end_positions"], 1] = 10
            return TaskOutput(None, logits)

    answers = predict_answers(Oracle(), windows, [x.context for x in examples], batch_size=7)
    assert [a for a, _ in answers] == [x.answer_text for x in examples]
    assert [s for _, s in answers] == [x.answer_start for x in examples]


# ------------------------------------------------------------------ baselines
def test_logistic_regression_sparse_equals_dense():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(60, 8, generator=g) > 0.6).float()
    y = (x[:, 0] + x[:, 1] > x[:, 2]).long()
    dense = LogisticRegression(8, 2).fit(x, y, l2=1e-2)
    sparse = LogisticRegression(8, 2).fit(x.to_sparse(), y, l2=1e-2)
    torch.testing.assert_close(dense.predict_proba(x), sparse.predict_proba(x.to_sparse()), atol=1e-4, rtol=1e-3)


def test_bag_of_words_learns_word_sentiment():
    texts = ["good film", "great fun", "good and great", "bad film", "awful mess", "bad and awful"] * 3
    labels = [1, 1, 1, 0, 0, 0] * 3
    bow = BagOfWords(min_count=1).fit(texts, labels, l2=1e-3)
    assert bow.predict(["a good one", "an awful one"]) == [1, 0]
    assert bow.top_words(1, k=2)[0][0] in ("good", "great")
    with pytest.raises(ValueError, match="no training texts"):
        BagOfWords().fit([], [])


# ------------------------------------------------------------------ the recipe and saving
def _toy_task(tok, n=64):
    texts = [("wonderful lovely " if i % 2 else "dreadful awful ") + "film number " + str(i) for i in range(n)]
    return encode_classification(tok, texts, [i % 2 for i in range(n)], num_labels=2, max_length=16)


def test_finetune_learns_and_accumulates(tok):
    runtime.seed_everything(0)
    model = BertForSequenceClassification(tiny_config(), num_labels=2)
    examples = _toy_task(tok)
    history = finetune(model, examples, lr=5e-3, epochs=8, batch_size=16, micro_batch_size=4, progress=False)
    # 64 examples / 16 per step * 8 epochs = 32 optimizer steps, each of 4 micro-batches of 4
    assert len(history.records) == 32
    assert history.records[-1]["loss"] < 0.5 * history.records[0]["loss"]
    lrs = [r["lr"] for r in history.records]
    assert max(lrs) == pytest.approx(5e-3, rel=0.1) and lrs[-1] < lrs[len(lrs) // 2]  # warmup, then decay
    preds = [int(l.argmax()) for l in predict_logits(model, examples)]
    assert sum(p == ex["labels"] for p, ex in zip(preds, examples)) / len(examples) > 0.9


def test_save_load_predict_roundtrip(tok, tmp_path):
    runtime.seed_everything(0)
    model = BertForSequenceClassification(tiny_config(), num_labels=2)
    finetune(model, _toy_task(tok), lr=5e-3, epochs=8, batch_size=16, progress=False)
    save_finetuned(tmp_path / "clf", model, tok, ["negative", "positive"], max_length=16)
    clf = load_finetuned(tmp_path / "clf")
    texts = ["a wonderful lovely film", "a dreadful awful film"]
    preds = clf.predict(texts)
    assert [p.label for p in preds] == ["positive", "negative"]
    assert all(0.5 < p.probability <= 1 and abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in preds)
    again = encode_classification(tok, texts, max_length=16)
    torch.testing.assert_close(torch.stack(predict_logits(model, again)), torch.stack(predict_logits(clf.model, again)))
    with pytest.raises(FileNotFoundError, match="save_finetuned"):
        load_finetuned(tmp_path / "nothing")
    with pytest.raises(ValueError, match="no texts"):
        clf.predict([])


def test_predict_tags_one_per_word(tok):
    runtime.seed_everything(0)
    labels = data.ner_labels()
    model = BertForTokenClassification(tiny_config(), num_labels=len(labels))
    sents = data.ner("validation")[:5]
    examples = encode_ner(tok, [w for w, _ in sents], label_list=labels, max_length=12)
    tags = predict_tags(model, examples, labels)
    assert [len(t) for t in tags] == [len(w) for w, _ in sents]  # words cut off by max_length -> "O"
    assert all(t in labels for sent in tags for t in sent)


# ------------------------------------------------------------------ chapter 5a's classifier, reused by 6b and 6d
def test_sentiment_sample_is_fixed_and_nested():
    from bertmini.finetuning import sentiment_sample

    small, large = sentiment_sample(50), sentiment_sample(200)
    assert large[:50] == small and len(large) == 200
    assert sentiment_sample(50) == small
    assert {y for _, y in large} == {0, 1}
    assert small != data.sentiment("train")[:50]  # shuffled, not the split's own order


def test_load_or_finetune_sentiment_minilm_caches_by_recipe(tok, tmp_path, monkeypatch):
    """A cached model trained by the current recipe is reused; one from another recipe is retrained."""
    from bertmini import finetuning

    monkeypatch.setenv("BERTMINI_CACHE", str(tmp_path))
    calls = []

    def fake_finetune(recipe, progress=True):  # a tiny untrained model: the caching is what is tested
        calls.append(recipe)
        runtime.seed_everything(0)
        return BertForSequenceClassification(tiny_config(), num_labels=2), tok, None

    monkeypatch.setattr(finetuning, "finetune_sentiment_minilm", fake_finetune)
    first = finetuning.load_or_finetune_sentiment_minilm(progress=False)
    assert len(calls) == 1 and first.recipe == finetuning.sentiment_recipe().to_dict()
    assert first.labels == ["negative", "positive"]
    again = finetuning.load_or_finetune_sentiment_minilm(progress=False)
    assert len(calls) == 1  # from the cache
    torch.testing.assert_close(again.model.classifier.weight, first.model.classifier.weight)
    stale = {**first.recipe, "lr": 1.0}
    save_finetuned(finetuning.sentiment_classifier_dir(), first.model, tok, first.labels, recipe=stale)
    finetuning.load_or_finetune_sentiment_minilm(progress=False)
    assert len(calls) == 2  # another recipe: trained again
