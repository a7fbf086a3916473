"""BertConfig, attention and BertModel: shapes, masks, init, sizes and bad input.

Equality with ``transformers`` is in ``test_hf_parity.py``; here the model is
checked against itself (fast vs explicit path, padded vs alone) and against
numbers worked out by formula (parameter counts, attention by hand).
"""
import math

import pytest
import torch

from bertmini.attention import BertSelfAttention, causal_mask, padding_mask, scaled_dot_product_attention
from bertmini.config import PRESETS, BertConfig
from bertmini.model import BertModel


def tiny(**kw):
    return BertConfig.preset("tiny", vocab_size=97, max_position_embeddings=32, **kw)


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return BertModel(tiny(**kw)).eval()


# ------------------------------------------------------------------ config


def test_presets_are_the_published_sizes():
    expected = {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8),
                "base": (12, 768, 12), "large": (24, 1024, 16)}
    for name, (layers, hidden, heads) in expected.items():
        c = BertConfig.preset(name)
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (layers, hidden, heads)
        assert c.intermediate_size == 4 * c.hidden_size
    assert set(PRESETS) == set(expected)
    assert BertConfig.preset("mini", vocab_size=8000).vocab_size == 8000


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(hidden_size=100, num_attention_heads=3), "not divisible"),
        (dict(hidden_size=0), "must be positive"),
        (dict(num_hidden_layers=-1), "must be positive"),
        (dict(vocab_size=10.5), "must be an int"),
        (dict(hidden_act="swishy"), "hidden_act"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(layer_norm_eps=0), "layer_norm_eps"),
        (dict(pad_token_id=99999), "pad_token_id"),
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        BertConfig(**kwargs)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        BertConfig.preset("huge")
    with pytest.raises(TypeError, match="unknown BertConfig field"):
        BertConfig.preset("tiny", hidden_sise=64)


def test_config_json_and_hf_round_trip(tmp_path):
    c = tiny(hidden_act="gelu_new")
    c.to_json(tmp_path / "config.json")
    assert BertConfig.from_json(tmp_path) == c
    hf = c.to_hf()
    assert type(hf).__name__ == "BertConfig" and hf.hidden_size == 128
    assert BertConfig.from_hf(hf) == c
    (tmp_path / "bad.json").write_text('{"model_type": "roberta"}')
    with pytest.raises(ValueError, match="model_type"):
        BertConfig.from_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="no config file"):
        BertConfig.from_json(tmp_path / "nope.json")


# --------------------------------------------------------------- attention


def test_attention_by_hand():
    # Three tokens, d_k = 2: q0 matches k1 strongly, so token 0 reads mostly v1.
    q = torch.tensor([[0.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    k = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out, probs = scaled_dot_product_attention(q, k, v)
    s = 4 / math.sqrt(2)
    row0 = torch.tensor([1.0, math.exp(s), 1.0]) / (2 + math.exp(s))
    torch.testing.assert_close(probs[0], row0)
    torch.testing.assert_close(out[0], row0 @ v)
    torch.testing.assert_close(probs[2], torch.full((3,), 1 / 3))  # a zero query sees all keys equally
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_causal_and_padding_masks():
    cm = causal_mask(4)
    future = torch.ones(4, 4, dtype=torch.bool).triu(1)
    assert (cm[future] < -1e30).all() and (cm[~future] == 0).all()
    x = torch.randn(4, 8)
    _, probs = scaled_dot_product_attention(x, x, x, cm)
    assert torch.all(probs.triu(1) == 0)
    pm = padding_mask(torch.tensor([[1, 1, 0]]))
    assert pm.shape == (1, 1, 1, 3) and pm[0, 0, 0, 2] < -1e30 and pm[0, 0, 0, :2].eq(0).all()


def _attention_and_padded_batch():
    torch.manual_seed(0)
    attn = BertSelfAttention(tiny()).eval()
    h = torch.randn(3, 7, 128)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5]).bool()[:, None, None, :]
    return attn, h, mask


def test_fast_and_explicit_paths_agree():
    attn, h, mask = _attention_and_padded_batch()
    fast, none = attn(h, mask)
    slow, probs = attn(h, mask, output_attentions=True)
    assert none is None
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    assert probs.shape == (3, 2, 7, 7)
    assert probs[2, :, :, 2:].abs().max() == 0  # padding keys get no weight


def test_bf16_autocast_on_cpu_takes_the_explicit_path_and_agrees_with_fp32():
    attn, h, mask = _attention_and_padded_batch()
    reference, _ = attn(h, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, probs = attn(h, mask)
    assert low.dtype == torch.bfloat16 and probs is None  # no probabilities unless asked
    torch.testing.assert_close(low.float(), reference, atol=3e-2, rtol=3e-2)
    h.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(h, mask)[0].float().sum().backward()
    assert h.grad is not None and bool(torch.isfinite(h.grad).all())


# ------------------------------------------------------------------- model


def test_shapes_and_names():
    m = make_model()
    ids = torch.randint(1, 97, (2, 9))
    out = m(ids, output_attentions=True, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 9, 128)
    assert out.pooler_output.shape == (2, 128)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 9, 9)
    assert len(out.hidden_states) == 3
    names = set(dict(m.named_parameters()))
    for n in ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
              "encoder.layer.1.attention.self.query.weight", "encoder.layer.1.attention.self.key.bias",
              "encoder.layer.1.attention.self.value.weight", "encoder.layer.1.attention.output.dense.weight",
              "encoder.layer.1.attention.output.LayerNorm.bias", "encoder.layer.1.intermediate.dense.weight",
              "encoder.layer.1.output.dense.weight", "encoder.layer.1.output.LayerNorm.weight",
              "pooler.dense.weight"]:
        assert n in names, n
    assert "embeddings.position_ids" not in m.state_dict()
    assert BertModel(tiny(), add_pooling_layer=False).eval()(ids).pooler_output is None


def test_padding_does_not_change_real_tokens():
    m = make_model()
    a = torch.randint(1, 97, (1, 5))
    b = torch.randint(1, 97, (1, 9))
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0, :5], batch[1] = a[0], b[0]
    mask = (torch.arange(9) < torch.tensor([[5], [9]])).long()
    with torch.no_grad():
        alone = m(a).last_hidden_state[0]
        padded = m(batch, attention_mask=mask)
        explicit = m(batch, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(padded.last_hidden_state[0, :5], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit.last_hidden_state, padded.last_hidden_state, atol=1e-5, rtol=1e-5)
    # Without the mask the padding leaks into the real tokens: the mask matters.
    unmasked = m(batch).last_hidden_state[0, :5]
    assert (unmasked - alone).abs().max() > 1e-3


def test_bidirectional_every_token_sees_the_future():
    m = make_model()
    ids = torch.randint(1, 97, (1, 6))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] % 96) + 1
    with torch.no_grad():
        h1, h2 = m(ids).last_hidden_state, m(changed).last_hidden_state
    assert (h1[0, 0] - h2[0, 0]).abs().max() > 1e-4  # token 0 depends on the last token


def test_init_like_bert():
    torch.manual_seed(0)
    m = BertModel(BertConfig.preset("mini", vocab_size=5000))
    w = m.encoder.layer[0].attention.self.query.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert m.encoder.layer[0].attention.self.query.bias.abs().max() == 0
    assert torch.all(m.embeddings.LayerNorm.weight == 1) and torch.all(m.embeddings.LayerNorm.bias == 0)
    assert m.embeddings.word_embeddings.weight[0].abs().max() == 0  # the [PAD] row


def test_dropout_only_in_training():
    m = make_model()
    ids = torch.randint(1, 97, (2, 8))
    with torch.no_grad():
        assert torch.equal(m(ids).last_hidden_state, m(ids).last_hidden_state)
        m.train()
        assert not torch.equal(m(ids).last_hidden_state, m(ids).last_hidden_state)


def test_gradients_reach_every_parameter():
    m = make_model().train()
    ids = torch.randint(1, 97, (2, 8))
    out = m(ids, token_type_ids=torch.tensor([[0] * 4 + [1] * 4] * 2))
    (out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and (name.startswith("embeddings.word") or p.grad.abs().sum() > 0), name
    # the word embeddings: a gradient in the rows of the ids used, and only there
    used = torch.zeros(97, dtype=torch.bool)
    used[ids.flatten()] = True
    row_grad = m.embeddings.word_embeddings.weight.grad.abs().sum(-1)
    assert bool((row_grad[used] > 0).all()) and bool((row_grad[~used] == 0).all())


def count_by_formula(c: BertConfig) -> int:
    H, I, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * H + 2 * H
    attention = 4 * (H * H + H) + 2 * H
    ffn = (H * I + I) + (I * H + H) + 2 * H
    pooler = H * H + H
    return embeddings + L * (attention + ffn) + pooler


@pytest.mark.parametrize("name, approx", [("base", 110e6), ("large", 340e6)])
def test_parameter_counts_on_meta(name, approx):
    c = BertConfig.preset(name)
    with torch.device("meta"):
        m = BertModel(c)
    n = m.num_parameters()
    assert n == count_by_formula(c)
    assert abs(n - approx) / approx < 0.03
    assert n == {"base": 109_482_240, "large": 335_141_888}[name]


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda m: m(torch.tensor([[1, 2, 97]])), "outside the vocabulary"),
        (lambda m: m(torch.tensor([[1, -1]])), "outside the vocabulary"),
        (lambda m: m(torch.ones(1, 33, dtype=torch.long)), "max_position_embeddings=32"),
        (lambda m: m(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4)), "attention_mask has shape"),
        (lambda m: m(torch.ones(2, 5, dtype=torch.long), token_type_ids=torch.ones(5, dtype=torch.long)),
         "token_type_ids has shape"),
        (lambda m: m(torch.ones(1, 5, dtype=torch.long), token_type_ids=torch.full((1, 5), 2)), "token_type_ids must"),
        (lambda m: m(torch.ones(1, 5, dtype=torch.long), attention_mask=torch.full((1, 5), 2)), "attention_mask must"),
        (lambda m: m(torch.ones(5, dtype=torch.long)), "unsqueeze"),
        (lambda m: m(torch.ones(1, 5)), "integer ids"),
        (lambda m: m(torch.ones(1, 0, dtype=torch.long)), "empty"),
    ],
)
def test_bad_input_is_a_clear_error(call, fragment):
    with pytest.raises((ValueError, TypeError), match=fragment):
        call(make_model())


def test_model_needs_a_bertmini_config():
    with pytest.raises(TypeError, match="from_hf"):
        BertModel(tiny().to_hf())
