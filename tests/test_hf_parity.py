"""bertmini equals ``transformers``' BERT: real weights, random odd shapes, both directions.

Nothing downloads: the real weights are the MiniLM in ``bertmini.data.minilm_path()``
and the tokenizer is built from its ``vocab.txt``.
"""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from bertmini import data  # noqa: E402
from bertmini.config import BertConfig  # noqa: E402
from bertmini.hf import from_hf, load_pretrained, to_hf  # noqa: E402
from bertmini.model import BertModel  # noqa: E402

ATOL = 1e-5


@pytest.fixture(scope="module")
def minilm_dir():
    return data.minilm_path()


@pytest.fixture(scope="module")
def tokenizer(sentences):
    # ``vocab=`` (a path): transformers 5 ignores the ``vocab_file`` keyword and silently
    # builds a 5-token vocabulary, which would feed the models only ids 0-3.
    tok = transformers.BertTokenizerFast(vocab=str(data.minilm_vocab_path()), do_lower_case=True)
    assert len(tok) == tok.vocab_size == 30522, f"the MiniLM tokenizer has {len(tok)} pieces, not 30,522"
    # The real-text tests check what they claim only if the text reaches many rows of the
    # embedding table, and few of its pieces are [UNK].
    ids = [i for row in tok(sentences)["input_ids"] for i in row]
    assert len(set(ids)) > 100, f"the real text uses only {len(set(ids))} distinct ids"
    assert ids.count(tok.unk_token_id) <= len(ids) // 50, "the real text is mostly [UNK]"
    return tok


@pytest.fixture(scope="module")
def models(minilm_dir):
    ours = load_pretrained(minilm_dir)
    theirs = transformers.BertModel.from_pretrained(str(minilm_dir), local_files_only=True).eval()
    return ours, theirs


@pytest.fixture(scope="module")
def sentences():
    # Real text: the first sentence of a few Wikipedia articles of the book's corpus.
    arts = data.wiki_articles("test")[:6]
    return [a.text.split(". ")[0][:300] for a in arts]


def assert_same(ours_out, hf_out, mask):
    real = mask.bool()
    diff = (ours_out.last_hidden_state - hf_out.last_hidden_state)[real].abs().max().item()
    assert diff < ATOL, f"last_hidden_state differs by {diff:.2e}"
    pdiff = (ours_out.pooler_output - hf_out.pooler_output).abs().max().item()
    assert pdiff < ATOL, f"pooler_output differs by {pdiff:.2e}"


def test_real_weights_single_sentences(models, tokenizer, sentences):
    ours, theirs = models
    for s in sentences[:3]:
        b = tokenizer(s, return_tensors="pt")
        with torch.no_grad():
            assert_same(ours(**b), theirs(**b), b["attention_mask"])


def test_real_weights_padded_batch(models, tokenizer, sentences):
    ours, theirs = models
    b = tokenizer(sentences, padding=True, return_tensors="pt")
    assert (b["attention_mask"] == 0).any(), "the batch should contain padding"
    with torch.no_grad():
        assert_same(ours(**b), theirs(**b), b["attention_mask"])
        # the explicit (output_attentions) path too
        assert_same(ours(**b, output_attentions=True), theirs(**b), b["attention_mask"])


def test_real_weights_sentence_pairs(models, tokenizer, sentences):
    ours, theirs = models
    b = tokenizer(sentences[:3], sentences[3:], padding=True, return_tensors="pt")
    assert (b["token_type_ids"] == 1).any() and (b["attention_mask"] == 0).any()
    with torch.no_grad():
        assert_same(ours(**b), theirs(**b), b["attention_mask"])


def test_attention_probabilities_match_eager(minilm_dir, models, tokenizer, sentences):
    ours, _ = models
    eager = transformers.BertModel.from_pretrained(
        str(minilm_dir), local_files_only=True, attn_implementation="eager"
    ).eval()
    b = tokenizer(sentences[:2], sentences[2:4], padding=True, return_tensors="pt")
    assert (b["attention_mask"] == 0).any(), "the batch should contain padding keys"
    with torch.no_grad():
        a = ours(**b, output_attentions=True).attentions
        e = eager(**b, output_attentions=True).attentions
    assert len(a) == len(e) == 6
    # Rows of padding *queries* are outputs nobody reads (and both sides compute
    # them from garbage); compare the rows of real tokens.
    real = b["attention_mask"].bool()
    for x, y in zip(a, e):
        assert (x - y).permute(0, 2, 1, 3)[real].abs().max() < ATOL


def random_hf_config(seed):
    g = torch.Generator().manual_seed(seed)
    heads = [1, 3, 5, 7][seed % 4]
    head_dim = int(torch.randint(2, 12, (1,), generator=g))
    return transformers.BertConfig(
        vocab_size=int(torch.randint(20, 200, (1,), generator=g)),
        hidden_size=heads * head_dim,
        num_hidden_layers=int(torch.randint(1, 4, (1,), generator=g)),
        num_attention_heads=heads,
        intermediate_size=int(torch.randint(5, 80, (1,), generator=g)),
        hidden_act=["gelu", "gelu_new", "relu"][seed % 3],
        max_position_embeddings=int(torch.randint(8, 40, (1,), generator=g)),
        type_vocab_size=int(torch.randint(1, 4, (1,), generator=g)),
        layer_norm_eps=[1e-12, 1e-5][seed % 2],
    )


@pytest.mark.parametrize("seed", range(8))
def test_random_configs(seed):
    torch.manual_seed(seed)
    cfg = random_hf_config(seed)
    theirs = transformers.BertModel(cfg, add_pooling_layer=seed % 2 == 0).eval()
    ours = from_hf(theirs)
    assert ours.config.num_attention_heads == cfg.num_attention_heads
    batch, seq = 3, cfg.max_position_embeddings  # full length: every position is used
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    tt = torch.randint(0, cfg.type_vocab_size, (batch, seq))
    mask = (torch.arange(seq) < torch.tensor([[seq], [seq // 2], [1]])).long()
    with torch.no_grad():
        a = ours(ids, token_type_ids=tt, attention_mask=mask)
        b = theirs(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    real = mask.bool()
    assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() < ATOL
    if seed % 2 == 0:
        assert (a.pooler_output - b.pooler_output).abs().max() < ATOL
    else:
        assert a.pooler_output is None and b.pooler_output is None


def test_to_hf_round_trip():
    torch.manual_seed(0)
    ours = BertModel(BertConfig.preset("tiny", vocab_size=300, num_attention_heads=4)).eval()
    theirs = to_hf(ours).eval()
    assert isinstance(theirs, transformers.BertModel)
    ids = torch.randint(0, 300, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        assert_same(ours(ids, attention_mask=mask), theirs(input_ids=ids, attention_mask=mask), mask)
    back = from_hf(theirs)
    assert list(ours.state_dict()) == list(back.state_dict())  # zip() below would stop at the shorter
    for (k, v), (k2, v2) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # to_hf copies: the two models share no storage
    assert theirs.embeddings.word_embeddings.weight.data_ptr() != ours.embeddings.word_embeddings.weight.data_ptr()


def test_to_hf_saved_and_reloaded_by_transformers(tmp_path):
    torch.manual_seed(1)
    ours = BertModel(BertConfig.preset("tiny", vocab_size=120, max_position_embeddings=64)).eval()
    to_hf(ours).save_pretrained(tmp_path)
    reloaded = transformers.BertModel.from_pretrained(str(tmp_path), local_files_only=True).eval()
    ids = torch.randint(0, 120, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert_same(ours(ids), reloaded(input_ids=ids), mask)
    # load_pretrained reads what transformers wrote
    again = load_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids).last_hidden_state, ours(ids).last_hidden_state)


@pytest.mark.parametrize("name", ["BertForPreTraining", "BertForMaskedLM"])
def test_head_models_round_trip(name):
    from bertmini import heads

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=150, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=100, max_position_embeddings=40)
    theirs = getattr(transformers, name)(cfg).eval()
    with torch.no_grad():  # a non-zero MLM bias, so that it is really copied
        theirs.cls.predictions.bias.normal_()
    ours = from_hf(theirs).eval()
    assert type(ours) is getattr(heads, name)
    ids = torch.randint(0, 150, (2, 12))
    with torch.no_grad():
        b = theirs(input_ids=ids)
        a = ours(input_ids=ids)
    hf_logits = b.prediction_logits if name == "BertForPreTraining" else b.logits
    assert (a.mlm_logits - hf_logits).abs().max() < ATOL
    if name == "BertForPreTraining":
        assert (a.nsp_logits - b.seq_relationship_logits).abs().max() < ATOL
    # the decoder stays tied to the word embeddings after loading
    assert ours.cls.predictions.decoder.weight.data_ptr() == ours.bert.embeddings.word_embeddings.weight.data_ptr()
    back = to_hf(ours).eval()
    assert type(back) is getattr(transformers, name)
    with torch.no_grad():
        c = back(input_ids=ids)
    c_logits = c.prediction_logits if name == "BertForPreTraining" else c.logits
    assert (c_logits - hf_logits).abs().max() < ATOL
    assert back.cls.predictions.decoder.weight.data_ptr() == back.bert.embeddings.word_embeddings.weight.data_ptr()


def test_from_hf_rejects_other_models():
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32)
    with pytest.raises(TypeError, match="BertForNextSentencePrediction"):
        from_hf(transformers.BertForNextSentencePrediction(cfg))
    with pytest.raises(TypeError, match="to_hf takes"):
        to_hf(torch.nn.Linear(2, 2))


def test_load_pretrained_names_what_is_wrong(tmp_path, minilm_dir):
    from safetensors.torch import load_file, save_file

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((minilm_dir / "config.json").read_text())
    state = load_file(str(minilm_dir / "model.safetensors"))
    del state["encoder.layer.3.output.dense.bias"]
    state["encoder.layer.0.attention.self.query.weight"] = state["encoder.layer.0.attention.self.query.weight"][:10]
    state["cls.predictions.extra"] = torch.zeros(3)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path)
    msg = str(err.value)
    assert "encoder.layer.3.output.dense.bias" in msg
    assert "encoder.layer.0.attention.self.query.weight" in msg and "(10, 384)" in msg
    assert "cls.predictions.extra" in msg
