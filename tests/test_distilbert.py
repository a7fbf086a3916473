"""DistilBERT in bertmini equals ``transformers``': random odd shapes, padding, both directions,
the round trip, the masked-LM loss; and the inputs DistilBERT cannot take are refused by name.

Nothing downloads: every ``transformers`` model is built from a config, in eval mode, with every
parameter moved off its initial value (so a bias or a LayerNorm used in the wrong place cannot hide
behind an initial 0 or 1).
"""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from bertmini.config import IGNORE_INDEX, BertConfig  # noqa: E402
from bertmini.hf import from_hf, to_hf  # noqa: E402
from bertmini.variants import distilbert  # noqa: E402

torch.set_num_threads(1)
ATOL = 1e-5
NAMES = ("DistilBertModel", "DistilBertForMaskedLM")


def random_hf_config(seed: int):
    """A small config with odd sizes: 1-3 heads of 2-7 dimensions, 1-3 layers, a feed-forward
    of any width, each activation the library's DistilBERT takes."""
    g = torch.Generator().manual_seed(seed)

    def draw(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    heads = [1, 3, 5, 2][seed % 4]
    return transformers.DistilBertConfig(
        vocab_size=draw(20, 90), dim=heads * draw(2, 8), n_heads=heads, hidden_dim=draw(5, 40), n_layers=draw(1, 4),
        max_position_embeddings=draw(16, 24), activation=["gelu", "gelu_new", "relu", "gelu"][seed % 4],
        dropout=0.1, attention_dropout=0.1)


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # each tied tensor once
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def random_batch(cfg, seed: int):
    """Three rows, the second and third padded with the padding id."""
    g = torch.Generator().manual_seed(seed)
    seq = min(14, cfg.max_position_embeddings)
    ids = torch.randint(1, cfg.vocab_size, (3, seq), generator=g)
    mask = (torch.arange(seq) < torch.tensor([[seq], [seq // 2], [2]])).long()
    return dict(input_ids=ids.masked_fill(mask == 0, cfg.pad_token_id), attention_mask=mask)


def field(out, name):
    return out.last_hidden_state if name == "DistilBertModel" else out.logits


def assert_same(ours, theirs, name, batch):
    real = batch["attention_mask"].bool()
    a, b = field(ours, name), field(theirs, name)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b)[real].abs().max().item()  # padding positions are outputs nobody reads
    assert diff < ATOL, f"{name}: outputs differ by {diff:.2e}"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", NAMES)
def test_from_hf_equals_transformers(name, seed):
    cfg = random_hf_config(seed)
    torch.manual_seed(seed)
    theirs = perturb(getattr(transformers, name)(cfg), seed).eval()
    ours = from_hf(theirs)
    assert type(ours) is getattr(distilbert, name) and not ours.training
    batch = random_batch(cfg, seed)
    with torch.no_grad():
        expected = theirs(**batch)
        assert_same(ours(**batch), expected, name, batch)
        if name == "DistilBertModel":  # the attention probabilities asked for: the same numbers
            assert_same(ours(**batch, output_attentions=True), expected, name, batch)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", NAMES)
def test_to_hf_equals_bertmini_and_round_trips(name, seed):
    config = distilbert.DistilBertConfig.from_hf(random_hf_config(seed + 10))
    torch.manual_seed(seed)
    ours = perturb(getattr(distilbert, name)(config), seed).eval()
    theirs = to_hf(ours).eval()
    assert type(theirs) is getattr(transformers, name)
    batch = random_batch(theirs.config, seed)
    with torch.no_grad():
        assert_same(ours(**batch), theirs(**batch), name, batch)
    back = from_hf(theirs).eval()  # from_hf(to_hf(m)) is m: the same weights under the same names
    own, again = ours.state_dict(), back.state_dict()
    assert set(own) == set(again) and all(torch.equal(own[k], again[k]) for k in own)
    assert back.config == ours.config


def test_masked_lm_loss_and_tied_weights_equal_transformers():
    cfg = random_hf_config(2)
    theirs = perturb(transformers.DistilBertForMaskedLM(cfg), 2).eval()
    ours = from_hf(theirs)
    assert ours.vocab_projector.weight is ours.distilbert.embeddings.word_embeddings.weight
    batch = random_batch(cfg, 2)
    ids, real = batch["input_ids"], batch["attention_mask"].bool()
    chosen = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(5)) < 0.3) & real
    chosen[0, 1] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    with torch.no_grad():
        a, b = ours(**batch, labels=labels), theirs(**batch, labels=labels)
    assert abs(a.loss.item() - b.loss.item()) < ATOL
    assert (a.logits - b.logits[chosen]).abs().max() < ATOL  # ours: logits at the masked positions only


def test_what_distilbert_drops_from_bert():
    """No token-type table, no pooler; everything else as wide as BERT's at the same sizes."""
    sizes = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ours = distilbert.DistilBertModel(distilbert.DistilBertConfig(**sizes))
    bert_config = BertConfig(**sizes)
    from bertmini.model import BertModel

    bert = BertModel(bert_config)
    names = {k for k, _ in ours.named_parameters()}
    assert not any("token_type" in k or "pooler" in k for k in names)
    token_types, pooler = 2 * 32, 32 * 32 + 32
    assert bert.num_parameters() - ours.num_parameters() == token_types + pooler
    hf = transformers.DistilBertConfig(dim=768, n_layers=6, n_heads=12, hidden_dim=3072)
    with torch.device("meta"):  # DistilBERT-base: 66M parameters, against BERT-base's 110M
        base = distilbert.DistilBertModel(distilbert.DistilBertConfig.from_hf(hf))
    assert 66.0e6 < base.num_parameters() < 66.5e6


# --------------------------------------------------------------------------- bad input, named


def test_token_types_refused():
    model = distilbert.DistilBertModel(distilbert.DistilBertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                                   num_attention_heads=2, intermediate_size=10)).eval()
    ids = torch.ones(1, 5, dtype=torch.long)
    model(ids, token_type_ids=torch.zeros_like(ids))  # all 0, as the book's single-sentence batches: fine
    with pytest.raises(ValueError, match="DistilBERT has no token-type embeddings, so token_type_ids must be all 0"):
        model(ids, token_type_ids=torch.tensor([[0, 0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):  # BERT's own checks still run
        model(torch.tensor([[1, 2, 99]]))


def test_configs_it_cannot_take_refused():
    with pytest.raises(ValueError, match="sinusoidal_pos_embds=True is not handled"):
        distilbert.DistilBertConfig.from_hf(transformers.DistilBertConfig(sinusoidal_pos_embds=True))
    with pytest.raises(ValueError, match="layer_norm_eps=1e-05: DistilBERT's LayerNorms use 1e-12"):
        distilbert.DistilBertConfig(layer_norm_eps=1e-5)
    with pytest.raises(ValueError, match="model_type='bert' is not 'distilbert'"):
        distilbert.DistilBertConfig.from_dict({"model_type": "bert"})


def test_config_names_both_ways(tmp_path):
    cfg = distilbert.DistilBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                      intermediate_size=20, hidden_act="gelu_new")
    hf = cfg.to_hf()
    assert (hf.dim, hf.n_layers, hf.n_heads, hf.hidden_dim, hf.activation) == (16, 3, 2, 20, "gelu_new")
    assert distilbert.DistilBertConfig.from_hf(hf) == cfg
    cfg.to_json(tmp_path / "config.json")
    assert distilbert.DistilBertConfig.from_json(tmp_path) == cfg
