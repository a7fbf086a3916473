"""The pictures of BERT (``bertmini.diagrams``): drawn from the real MiniLM and from a tiny
random config, every id and shape in them read from the model, so that a different model
draws a different picture; the encoder layer's shapes equal those of ``transformers``' BertLayer.
"""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.text import Text

from bertmini import data, diagrams
from bertmini.config import BertConfig
from bertmini.heads import BertForPreTraining
from bertmini.hf import load_pretrained
from bertmini.model import BertModel
from bertmini.task_heads import (BertForQuestionAnswering, BertForSequenceClassification,
                                 BertForTokenClassification)
from bertmini.tokenization import BertTokenizer

PAIR = ("my dog is cute", "he likes playing")


def texts(fig, gid=None) -> list[str]:
    """Every string drawn in ``fig`` (only those of the artists named ``gid``, if given), in order."""
    found = fig.findobj(Text)
    return [t.get_text() for t in found if t.get_text() and (gid is None or t.get_gid() == gid)]


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_vocab(data.minilm_vocab_path())


@pytest.fixture(scope="module")
def minilm():
    return load_pretrained(data.minilm_path())


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """Hidden 24 in 3 heads of 8, 2 layers, the real vocabulary (so the real ids fit)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=48, max_position_embeddings=32)
    return BertModel(config).eval()


@pytest.fixture(autouse=True)
def no_figure_left_open():
    yield
    assert plt.get_fignums() == [], "a test left a figure open"


def draw(function, *args, **kwargs) -> list[str]:
    """Draw, check what every picture promises (8 inches wide, no text under 8 points, nothing
    off the canvas, no random number drawn), close, and return the texts."""
    rng = torch.random.get_rng_state()
    fig = function(*args, **kwargs)
    try:
        assert torch.equal(torch.random.get_rng_state(), rng), "drawing changed torch's random state"
        assert tuple(fig.get_size_inches())[0] == diagrams.WIDTH
        fig.canvas.draw()
        for t in fig.findobj(Text):
            if t.get_text() and t.get_visible():
                assert t.get_fontsize() >= 8, f"{t.get_text()!r} is {t.get_fontsize()} pt"
                box = t.get_window_extent()
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width + 0.5 \
                    and box.y1 <= fig.bbox.height + 0.5, f"{t.get_text()!r} leaves the figure"
        return texts(fig)
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- the recipe (chapter 0)


def test_recipe_writes_the_numbers_it_is_given():
    plain = draw(diagrams.recipe_diagram)
    counted = draw(diagrams.recipe_diagram, corpus_words=886_512, task="topics", task_examples=8_026,
                   labels=("history", "science"))
    assert not any(ch.isdigit() for t in plain for ch in t if t.startswith(("unlabelled", "labelled")))
    assert "unlabelled text\nWikipedia\n886,512 words" in counted
    assert "labelled text\ntopics\n8,026 examples" in counted
    assert "label:\nhistory\nor science" in counted


# --------------------------------------------------------------------------- the input (chapter 3)


def test_input_shows_the_real_ids_segments_and_positions(minilm, tiny, tokenizer):
    enc = tokenizer.encode(*PAIR)
    drawn = {}
    for name, model in (("minilm", minilm), ("tiny", tiny)):
        fig = diagrams.input_diagram(model, tokenizer, *PAIR)
        rows = {gid: texts(fig, gid) for gid in ("tokens", "input_ids", "token_type_ids", "position_ids")}
        plt.close(fig)
        assert rows["tokens"] == enc.tokens
        assert rows["input_ids"] == [str(i) for i in enc.ids]
        assert rows["token_type_ids"] == [str(t) for t in enc.token_type_ids]
        assert rows["position_ids"] == [str(p) for p in range(len(enc.ids))]
        drawn[name] = draw(diagrams.input_diagram, model, tokenizer, *PAIR)
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2 and set(enc.token_type_ids) == {0, 1}
    n, h = len(enc.ids), minilm.config.hidden_size
    assert f"word_embeddings\n30522 × {h} table" in drawn["minilm"]
    assert f"position_embeddings\n512 × {h} table" in drawn["minilm"]
    assert f"token_type_embeddings\n2 × {h} table" in drawn["minilm"]
    assert f"sum (1, {n}, {h}) → LayerNorm → dropout → (1, {n}, {h})" in drawn["minilm"]
    assert f"sum (1, {n}, 24) → LayerNorm → dropout → (1, {n}, 24)" in drawn["tiny"]
    assert "position_embeddings\n32 × 24 table" in drawn["tiny"]
    assert drawn["minilm"] != drawn["tiny"]


def test_input_shapes_are_those_of_the_embeddings_forward(minilm, tokenizer):
    enc = tokenizer.encode(*PAIR)
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.token_type_ids])
    shapes = diagrams.embedding_shapes(minilm, ids, types)
    with torch.no_grad():
        expected = tuple(minilm.embeddings(ids, types).shape)
    assert shapes["LayerNorm"] == shapes["dropout"] == shapes["word_embeddings"] == expected
    assert shapes["word_embeddings.weight"] == tuple(minilm.embeddings.word_embeddings.weight.shape)
    assert minilm.training is False


# --------------------------------------------------------------------------- the layer (chapter 3)


def test_encoder_block_shapes_come_from_the_config(minilm, tiny):
    real = draw(diagrams.encoder_block_diagram, minilm.config, batch=2, seq=5)
    assert {"input (2, 5, 384)", "(2, 5, 384)", "(2, 5, 1536)", "output (2, 5, 384)"} <= set(real)
    assert "multi-head self-attention\n12 heads × d_head 32" in real
    assert "Linear 384 → 1536, GELU" in real and "Linear 1536 → 384" in real
    assert "× 6\nlayers" in real and any("attention weights (2, 12, 5, 5)" in t for t in real)
    assert {"intermediate.dense", "output.dense", "attention.output.LayerNorm", "output.LayerNorm"} <= set(real)
    small = draw(diagrams.encoder_block_diagram, tiny.config, batch=3, seq=7)
    assert {"input (3, 7, 24)", "(3, 7, 48)", "× 2\nlayers", "multi-head self-attention\n3 heads × d_head 8"} \
        <= set(small)
    assert not {"(2, 5, 384)", "(2, 5, 1536)"} & set(small)


def test_encoder_block_shapes_equal_transformers_bert_layer(tiny):
    """The same module names hooked in transformers' BertLayer return the same shapes."""
    from transformers.models.bert.modeling_bert import BertLayer as HFBertLayer

    ours = diagrams.layer_shapes(tiny.config, batch=2, seq=5)
    layer, shapes = HFBertLayer(tiny.config.to_hf()).eval(), {}
    for name in ours:
        if name not in ("input", "probs", "output"):
            layer.get_submodule(name).register_forward_hook(
                lambda m, i, out, name=name: shapes.__setitem__(name, tuple((out[0] if isinstance(out, tuple)
                                                                             else out).shape)))
    with torch.no_grad():
        out = layer(torch.zeros(2, 5, 24))
    out = out[0] if isinstance(out, tuple) else out
    assert shapes == {k: v for k, v in ours.items() if k not in ("input", "probs", "output")}
    assert ours["output"] == tuple(out.shape) and ours["probs"] == (2, 3, 5, 5)


# --------------------------------------------------------------------------- the heads (chapter 3)


def test_multi_head_split_and_merge(minilm, tiny):
    real = draw(diagrams.multi_head_diagram, minilm.config, seq=5)
    assert "Q (5, 384)" in real and "concat (5, 384)" in real and "output (5, 384)" in real
    assert "split_heads\n(5, 384)\n→ (12, 5, 32)" in real and "merge_heads\n(12, 5, 32)\n→ (5, 384)" in real
    heads = [t.split("\n")[0] for t in real if t.startswith("head ")]
    assert heads == ["head 1", "head 2", "head 12"] and "..." in real
    assert any(r"\sqrt{32}" in t and "weights (5, 5)\nout (5, 32)" in t for t in real)
    small = draw(diagrams.multi_head_diagram, tiny.config, seq=4)
    assert "split_heads\n(4, 24)\n→ (3, 4, 8)" in small and "..." not in small
    assert [t.split("\n")[0] for t in small if t.startswith("head ")] == ["head 1", "head 2", "head 3"]
    assert any(r"\sqrt{8}" in t and "weights (4, 4)\nout (4, 8)" in t for t in small)


def test_head_shapes_follow_split_heads_on_real_numbers(tiny):
    """The meta-device shapes equal those of the attention run on real numbers."""
    attention = tiny.encoder.layer[0].attention.self
    x = torch.randn(1, 6, 24)
    with torch.no_grad():
        split = attention.split_heads(attention.query(x))
        _, probs = attention(x, output_attentions=True)
    shapes = diagrams.head_shapes(tiny.config, seq=6)
    assert shapes["q_heads"] == tuple(split.shape[1:]) and shapes["probs"] == tuple(probs.shape[1:])


# --------------------------------------------------------------------------- chapters 4 and 5


def pretraining_model(encoder):
    torch.manual_seed(0)
    model = BertForPreTraining(encoder.config)
    model.bert.load_state_dict(encoder.state_dict())
    return model.eval()


def test_pretrain_finetune_counts_and_shapes(minilm, tiny):
    for encoder in (minilm, tiny):
        pre = pretraining_model(encoder)
        torch.manual_seed(0)
        fine = BertForSequenceClassification.from_encoder(pre.bert, num_labels=3)
        drawn = draw(diagrams.pretrain_finetune_diagram, pre, fine)
        h, v = encoder.config.hidden_size, encoder.config.vocab_size
        transform = h * h + h + 2 * h   # dense and LayerNorm; the decoder is the word embeddings
        assert any(f"\n{encoder.num_parameters():,} parameters" in t for t in drawn)
        assert any(f"{transform + v:,} parameters\ndecoder tied to word_embeddings\n→ (1, {v})" in t
                   for t in drawn)
        assert any(f"cls.seq_relationship\n{2 * h + 2:,} parameters\n→ (1, 2)" in t for t in drawn)
        assert any(f"classifier\n{3 * h + 3:,} parameters\n→ (1, 3)" in t for t in drawn)
        assert "Fine-tuning: BertForSequenceClassification" in drawn and drawn.count("[CLS]") == 4


def test_pretrain_finetune_token_and_span_heads(tiny):
    pre = pretraining_model(tiny)
    tagger = draw(diagrams.pretrain_finetune_diagram, pre, BertForTokenClassification, num_labels=5)
    assert any("classifier\n125 parameters\n→ (1, 7, 5)" in t for t in tagger)
    qa = draw(diagrams.pretrain_finetune_diagram, pre, BertForQuestionAnswering.from_encoder(pre.bert))
    assert any("qa_outputs\n50 parameters\n→ (1, 7, 2)" in t for t in qa)
    # a per-token head reads every token: no arrow labelled [CLS] on the right (two token boxes, the NSP arrow)
    assert qa.count("[CLS]") == 3 and tagger.count("[CLS]") == 3
    assert pre.training is False


def test_task_heads_are_the_packages(minilm, tiny):
    real = draw(diagrams.task_heads_diagram, minilm.config)
    for line in ("BertForSequenceClassification: classifier → (1, 2)",
                 "BertForTokenClassification: classifier → (1, 6, 3)",
                 "BertForQuestionAnswering: qa_outputs → (1, 8, 2)"):
        assert line in real
    assert real.count("BERT encoder: 6 layers × 384") == 4
    assert real.count("tag") == 3 and real.count("-100") == 3 and {"start", "end"} <= set(real)
    small = draw(diagrams.task_heads_diagram, tiny.config, num_labels=4, num_tags=5)
    assert "BertForSequenceClassification: classifier → (1, 4)" in small
    assert "BertForTokenClassification: classifier → (1, 6, 5)" in small
    assert small.count("BERT encoder: 2 layers × 24") == 4 and small != real


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_named(minilm, tokenizer):
    with pytest.raises(ValueError, match="at most 14"):
        diagrams.input_diagram(minilm, tokenizer, "a much longer first sentence than fits on the page",
                               "and a second one that is long as well")
    small = BertModel(BertConfig.preset("tiny", vocab_size=100)).eval()
    with pytest.raises(ValueError, match="outside the model's vocabulary of 100"):
        diagrams.input_diagram(small, tokenizer, *PAIR)
    with pytest.raises(TypeError, match="pass model.config"):
        diagrams.encoder_block_diagram(minilm)
    with pytest.raises(TypeError, match="BertConfig.from_hf"):
        diagrams.multi_head_diagram(minilm.config.to_hf())
    with pytest.raises(ValueError, match="seq must be a positive int"):
        diagrams.multi_head_diagram(minilm.config, seq=0)
    with pytest.raises(ValueError, match="num_tags must be a positive int"):
        diagrams.task_heads_diagram(minilm.config, num_tags=0)
    with pytest.raises(TypeError, match="BertForPreTraining"):
        diagrams.pretrain_finetune_diagram(minilm, minilm)
    with pytest.raises(TypeError, match="BertModel"):
        diagrams.input_diagram(torch.nn.Linear(2, 2), tokenizer, *PAIR)
    assert plt.get_fignums() == []
