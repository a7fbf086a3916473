"""bertmini's models in ``transformers`` (chapter 6d): ``hf.export`` writes a directory the library's
``AutoTokenizer``, ``AutoModelFor...`` and ``pipeline`` load offline, and they give bertmini's answers;
``hf.load`` reads such a directory (or one ``save_pretrained`` wrote) back; bad input is named.

Tiny random models on the real 30,522-piece vocabulary, label names that are not ASCII; nothing downloads.
"""
import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from bertmini import data, hf, runtime  # noqa: E402
from bertmini.checkpoint import CorruptCheckpointError  # noqa: E402
from bertmini.config import BertConfig  # noqa: E402
from bertmini.finetuning import FineTunedClassifier  # noqa: E402
from bertmini.heads import BertForMaskedLM, BertForPreTraining  # noqa: E402
from bertmini.model import BertModel  # noqa: E402
from bertmini.probes import fill_in_the_blank  # noqa: E402
from bertmini.task_heads import (BertForQuestionAnswering, BertForSequenceClassification,  # noqa: E402
                                 BertForTokenClassification)
from bertmini.tokenization import BertTokenizer  # noqa: E402

from test_tokenization import HARD  # noqa: E402  (chapter 1's hard set)

LABELS = ["négatif", "中立", "positif 😀"]
SENTENCES = ["A warm, funny and beautifully acted film.", "Two hours of my life I will never get back.",
             "Café au lait, naïve Zürich: 東京タワー!", "not as bad as i feared"]


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(data.minilm_vocab_path())


def tiny(tok, **kw):
    return BertConfig(**{**dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=48, max_position_embeddings=64), **kw})


def auto(cls_name, directory):
    return getattr(transformers, cls_name).from_pretrained(str(directory), local_files_only=True).eval()


def pipe(task, directory):
    return transformers.pipeline(task, model=str(directory), device="cpu")


# ---------------------------------------------------------------- the library's pipelines give bertmini's answers

def test_fill_mask_pipeline_equals_fill_in_the_blank(tok, tmp_path):
    torch.manual_seed(0)
    pretrained = BertForPreTraining(tiny(tok)).eval()
    with torch.no_grad():  # a non-zero MLM bias, so that it is really written
        pretrained.cls.predictions.bias.normal_()
    hf.export(BertForMaskedLM.from_pretraining(pretrained), tok, tmp_path)
    fill_mask = pipe("fill-mask", tmp_path)
    for text in ["The capital of France is [MASK].", "Zürich's [MASK] is naïve, [MASK] said."]:
        theirs = fill_mask(text, top_k=5)
        ours = fill_in_the_blank(pretrained, tok, text, k=5)
        theirs = [theirs] if isinstance(theirs[0], dict) else theirs  # one list per [MASK]
        for ours_at, theirs_at in zip(ours, theirs, strict=True):
            assert [p for p, _ in ours_at] == [tok.ids_to_tokens[r["token"]] for r in theirs_at]
            assert [q for _, q in ours_at] == pytest.approx([r["score"] for r in theirs_at], abs=1e-6)


def test_text_classification_pipeline_equals_predict(tok, tmp_path):
    torch.manual_seed(1)
    # wide initial weights, so that the sentences get different labels, none of them a near tie
    model = BertForSequenceClassification(tiny(tok, initializer_range=0.5), num_labels=3).eval()
    hf.export(model, tok, tmp_path, labels=LABELS)
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
    assert config["label2id"] == {name: i for i, name in enumerate(LABELS)}
    theirs = pipe("text-classification", tmp_path)(SENTENCES, top_k=None)
    ours = FineTunedClassifier(model, tok, LABELS).predict(SENTENCES)
    assert len({p.label for p in ours}) > 1  # the sentences do not all get one label
    for p, scores in zip(ours, theirs, strict=True):
        assert scores[0]["label"] == p.label
        assert {s["label"]: s["score"] for s in scores} == pytest.approx(p.probabilities, abs=1e-6)


@pytest.mark.parametrize("cls, auto_name", [(BertModel, "AutoModel"),
                                            (BertForPreTraining, "AutoModelForPreTraining"),
                                            (BertForTokenClassification, "AutoModelForTokenClassification"),
                                            (BertForQuestionAnswering, "AutoModelForQuestionAnswering")])
def test_every_class_loads_in_transformers_with_the_same_outputs(tok, tmp_path, cls, auto_name):
    torch.manual_seed(2)
    model = (cls(tiny(tok), num_labels=5) if cls is BertForTokenClassification else cls(tiny(tok))).eval()
    hf.export(model, tok, tmp_path)
    theirs = auto(auto_name, tmp_path)
    assert type(theirs).__name__ == cls.__name__
    batch = transformers.AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)(
        SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = model(**batch), theirs(**batch)
    real = batch["attention_mask"].bool()
    if cls is BertModel:
        pairs = [(a.last_hidden_state[real], b.last_hidden_state[real]), (a.pooler_output, b.pooler_output)]
    elif cls is BertForPreTraining:
        pairs = [(a.mlm_logits[real], b.prediction_logits[real]), (a.nsp_logits, b.seq_relationship_logits)]
    elif cls is BertForQuestionAnswering:
        pairs = [(a.start_logits[real], b.start_logits[real]), (a.end_logits[real], b.end_logits[real])]
    else:
        pairs = [(a.logits[real], b.logits[real])]
    for x, y in pairs:
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_exported_tokenizer_gives_bertmini_ids(tok, tmp_path):
    hf.export(BertModel(tiny(tok)), tok, tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert theirs.model_max_length == 64 and theirs.mask_token_id == tok.mask_token_id
    texts = [a.text for a in data.wiki_articles("validation")[:200]] + HARD["texts"]
    ids = theirs(texts)["input_ids"]
    assert [tok.encode(t).ids for t in texts] == ids
    firsts, seconds = zip(*HARD["pairs"])
    for max_length in HARD["max_lengths"]:
        enc = theirs(list(firsts), list(seconds), max_length=max_length, truncation=True)
        for i, (a, b) in enumerate(HARD["pairs"]):
            ours = tok.encode(a, b, max_length=max_length, truncation=True)
            assert (ours.ids, ours.token_type_ids) == (enc["input_ids"][i], enc["token_type_ids"][i]), (a, b)


def test_a_small_vocabulary_of_its_own(tmp_path):
    tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "good", "##s", ".",
                         "é", "bad"])
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=8), num_labels=2)
    hf.export(model, tok, tmp_path, labels=["bad", "good"])
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for text in ["The films was good.", "É bad, unknown!"]:
        assert theirs(text)["input_ids"] == tok.encode(text).ids


# ---------------------------------------------------------------- and back into bertmini

def test_load_reads_back_what_export_wrote(tok, tmp_path):
    torch.manual_seed(3)
    model = BertForSequenceClassification(tiny(tok), num_labels=3).eval()
    hf.export(model, tok, tmp_path, labels=LABELS)
    back, back_tok, labels = hf.load(tmp_path)
    assert type(back) is BertForSequenceClassification and labels == LABELS and not back.training
    assert back_tok.ids_to_tokens == tok.ids_to_tokens
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM", "BertForPreTraining",
                                      "BertForSequenceClassification", "BertForTokenClassification",
                                      "BertForQuestionAnswering"])
def test_load_reads_what_transformers_saved(tok, tmp_path, cls_name):
    torch.manual_seed(4)
    labelled = cls_name in hf.LABELLED  # the library's QA head takes its 2 outputs from num_labels too
    config = tiny(tok).to_hf(**({"id2label": dict(enumerate(LABELS))} if labelled else {}))
    theirs = getattr(transformers, cls_name)(config).eval()
    theirs.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(tok.ids_to_tokens) + "\n", encoding="utf-8")
    ours, _, labels = hf.load(tmp_path)
    assert type(ours).__name__ == cls_name
    assert labels == (LABELS if labelled else None)
    ids = torch.tensor([tok.encode(SENTENCES[2]).ids])
    with torch.no_grad():
        a, b = ours(input_ids=ids), theirs(input_ids=ids)
    x = a.last_hidden_state if cls_name == "BertModel" else a.mlm_logits if "Pre" in cls_name or "Masked" in cls_name \
        else a.logits
    y = b.last_hidden_state if cls_name == "BertModel" else b.prediction_logits if "Pre" in cls_name \
        else torch.stack([b.start_logits, b.end_logits], -1) if "Question" in cls_name else b.logits
    torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)


def test_load_the_real_minilm_and_a_tokenizer_json_only_directory(tok, tmp_path):
    model, minilm_tok, labels = hf.load(data.minilm_path())
    assert type(model) is BertModel and model.pooler is not None and labels is None
    assert len(minilm_tok) == 30522
    hf.export(BertModel(tiny(tok)), tok, tmp_path)
    (tmp_path / "vocab.txt").unlink()  # a checked folder: the manifest now names a missing file
    with pytest.raises(CorruptCheckpointError, match="vocab.txt"):
        hf.load(tmp_path)
    (tmp_path / "checkpoint.json").unlink()  # as transformers would have left it: tokenizer.json only
    assert hf.load(tmp_path)[1].ids_to_tokens == tok.ids_to_tokens


def test_from_pretraining_keeps_the_masked_lm_and_drops_the_rest(tok):
    torch.manual_seed(5)
    pretrained = BertForPreTraining(tiny(tok)).eval()
    mlm = BertForMaskedLM.from_pretraining(pretrained)
    assert not mlm.training and mlm.bert.pooler is None and not hasattr(mlm.cls, "seq_relationship")
    assert mlm.cls.predictions.decoder.weight.data_ptr() == mlm.bert.embeddings.word_embeddings.weight.data_ptr()
    assert mlm.cls.predictions.decoder.weight.data_ptr() != pretrained.cls.predictions.decoder.weight.data_ptr()
    ids = torch.tensor([tok.encode(SENTENCES[0]).ids])
    with torch.no_grad():
        assert torch.equal(mlm(ids).mlm_logits, pretrained(ids).mlm_logits)
    with pytest.raises(TypeError, match="takes a BertForPreTraining, got BertForMaskedLM"):
        BertForMaskedLM.from_pretraining(mlm)


def test_task_heads_through_from_hf_and_to_hf(tok):
    torch.manual_seed(6)
    for theirs in (transformers.BertForSequenceClassification(tiny(tok).to_hf(num_labels=4)),
                   transformers.BertForTokenClassification(tiny(tok).to_hf(num_labels=3)),
                   transformers.BertForQuestionAnswering(tiny(tok).to_hf())):
        ours = hf.from_hf(theirs.eval())
        assert type(ours).__name__ == type(theirs).__name__ and ours.num_labels == theirs.config.num_labels
        back = hf.to_hf(ours)
        assert back.config.num_labels == theirs.config.num_labels
        for (k, v), (k2, v2) in zip(theirs.state_dict().items(), back.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(v, v2)


# ---------------------------------------------------------------- the model card

def test_model_card_has_the_data_card_and_the_results(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMINI_CACHE", str(tmp_path / "cache"))
    runtime.save_results("card_test", {"accuracy": 0.8125, "per_seed": [0.75, 0.5], "note": "text"})
    model = BertForSequenceClassification(tiny(tok), num_labels=3)
    hf.export(model, tok, tmp_path / "out", labels=LABELS, data="sentiment", results=["card_test", "not_run"])
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "pipeline_tag: text-classification" in card and "BertForSequenceClassification" in card
    assert data.CARDS["sentiment"]["licence"] in card and data.CARDS["sentiment"]["attribution"] in card
    assert "| accuracy | 0.8125 |" in card and "| per_seed | 0.75, 0.5 |" in card and "note" not in card
    assert "No numbers yet" in card and "1 = 中立" in card


# ---------------------------------------------------------------- bad input, and nothing lost

def test_export_refuses_bad_input(tok, tmp_path):
    model = BertForSequenceClassification(tiny(tok), num_labels=3)
    small = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])
    with pytest.raises(ValueError, match="vocabulary has 30,522 rows but the tokenizer has 6 pieces"):
        hf.export(model, small, tmp_path)
    with pytest.raises(ValueError, match="2 label name.s. for a model with 3 outputs"):
        hf.export(model, tok, tmp_path, labels=["neg", "pos"])
    with pytest.raises(ValueError, match="different, non-empty string name"):
        hf.export(model, tok, tmp_path, labels=["a", "b", "a"])
    with pytest.raises(TypeError, match="one string"):
        hf.export(model, tok, tmp_path, labels="abc")
    with pytest.raises(ValueError, match="a BertModel has none"):
        hf.export(BertModel(tiny(tok)), tok, tmp_path, labels=["a"])
    with pytest.raises(TypeError, match="needs the model's bertmini BertTokenizer"):
        hf.export(model, transformers.AutoTokenizer.from_pretrained(str(data.minilm_path())), tmp_path)
    with pytest.raises(TypeError, match="to_hf takes a bertmini"):
        hf.export(torch.nn.Linear(2, 2), tok, tmp_path)
    from bertmini.variants.roberta import RobertaConfig, RobertaModel
    roberta = RobertaModel(RobertaConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=8))
    with pytest.raises(TypeError, match="export writes BERT's classes .*got a RobertaModel"):
        hf.export(roberta, tok, tmp_path)
    with pytest.raises(ValueError, match="not a data card"):
        hf.export(model, tok, tmp_path, data="imdb")
    assert list(tmp_path.iterdir()) == []  # nothing was written
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError):
        hf.export(model, tok, tmp_path / "a_file")


def test_export_writes_only_its_own_files(tok, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "model.safetensors").write_bytes(b"an older save")
    model = BertForSequenceClassification(tiny(tok), num_labels=2)
    hf.export(model, tok, tmp_path, labels=["no", "yes"])
    hf.export(model, tok, tmp_path, labels=["nein", "ja"])  # again, over its own files
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.txt", "checkpoint.json", "config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
         "tokenizer_config.json", "README.md"])
    assert hf.load(tmp_path)[2] == ["nein", "ja"]


def test_load_names_a_directory_that_is_not_a_bert(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf.load(tmp_path)
    roberta = transformers.RobertaConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=8)
    transformers.RobertaForMaskedLM(roberta).save_pretrained(tmp_path / "roberta")
    with pytest.raises(ValueError, match="holds a RobertaForMaskedLM .model_type='roberta'., not a BERT"):
        hf.load(tmp_path / "roberta")
    (tmp_path / "gpt2").mkdir()  # no architectures: a BertModel, were it a BERT at all
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "gpt2" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="holds a BertModel .model_type='gpt2'., not a BERT"):
        hf.load(tmp_path / "gpt2")
    transformers.BertForNextSentencePrediction(tiny(tok).to_hf()).save_pretrained(tmp_path / "nsp")
    with pytest.raises(ValueError, match="holds a BertForNextSentencePrediction"):
        hf.load(tmp_path / "nsp")
    transformers.BertModel(tiny(tok).to_hf()).save_pretrained(tmp_path / "no_vocab")
    with pytest.raises(FileNotFoundError, match="no vocab.txt or tokenizer.json"):
        hf.load(tmp_path / "no_vocab")
    (tmp_path / "no_vocab" / "vocab.txt").write_text("\n".join(tok.ids_to_tokens) + "\n", encoding="utf-8")
    (tmp_path / "no_vocab" / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    with pytest.raises(ValueError, match="cased"):
        hf.load(tmp_path / "no_vocab")


def test_a_directory_overwritten_by_transformers_is_named(tok, tmp_path):
    hf.export(BertModel(tiny(tok)), tok, tmp_path)
    auto("AutoModel", tmp_path).save_pretrained(tmp_path)  # new weights under bertmini's old manifest
    with pytest.raises(CorruptCheckpointError, match="checkpoint.json are stale: delete that file"):
        hf.load(tmp_path)
    (tmp_path / "checkpoint.json").unlink()
    assert type(hf.load(tmp_path)[0]) is BertModel
