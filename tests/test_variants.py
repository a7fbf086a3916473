"""RoBERTa, ALBERT and ELECTRA in bertmini equal ``transformers``': random odd shapes, padding,
an embedding size different from the hidden size, both directions and the round trip.

Nothing downloads: every ``transformers`` model is built from a config, in eval mode, with
every parameter moved off its initial value (so that a bias or a LayerNorm used in the
wrong place cannot hide behind an initial 0 or 1).
"""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from bertmini.config import IGNORE_INDEX, BertConfig  # noqa: E402
from bertmini.hf import from_hf, to_hf  # noqa: E402
from bertmini.variants import albert, electra, roberta  # noqa: E402

torch.set_num_threads(1)
ATOL = 1e-5

FAMILIES = {
    "Roberta": ("RobertaModel", "RobertaForMaskedLM"),
    "Albert": ("AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM"),
    "Electra": ("ElectraModel", "ElectraForPreTraining", "ElectraForMaskedLM"),
}
CLASSES = [(family, name) for family, names in FAMILIES.items() for name in names]
OURS = {"Roberta": roberta, "Albert": albert, "Electra": electra}
# The outputs compared, under the library's names; None where a model has no such output.
FIELDS = ("last_hidden_state", "pooler_output", "logits", "prediction_logits", "sop_logits")


def random_hf_config(family: str, seed: int):
    """A small config with odd sizes: hidden <= 35, 1-3 layers, an embedding size that differs
    from the hidden size (except for seed 3, where ELECTRA then has no embeddings_project)."""
    g = torch.Generator().manual_seed(1000 * len(family) + seed)

    def draw(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    heads = [1, 3, 5, 2][seed % 4]
    hidden = heads * draw(2, 8)
    common = dict(
        vocab_size=draw(20, 90), hidden_size=hidden, num_attention_heads=heads, intermediate_size=draw(5, 40),
        num_hidden_layers=draw(1, 3), max_position_embeddings=draw(12, 20), type_vocab_size=draw(1, 4),
        layer_norm_eps=[1e-12, 1e-5][seed % 2], hidden_act=["gelu", "gelu_new", "relu", "gelu_new"][seed % 4],
    )
    if family == "Roberta":  # even seeds: one token type, as RoBERTa's checkpoints have
        return transformers.RobertaConfig(**{**common, "type_vocab_size": 1 if seed % 2 == 0 else 2}, pad_token_id=1)
    embedding = hidden if seed == 3 else draw(3, 20)
    if embedding == hidden and seed != 3:
        embedding += 1
    if family == "Electra":
        return transformers.ElectraConfig(**common, embedding_size=embedding)
    layers = draw(2, 4)
    return transformers.AlbertConfig(**{**common, "num_hidden_layers": layers}, embedding_size=embedding,
                                     num_hidden_groups=draw(1, layers + 1), inner_group_num=draw(1, 3))


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter (each shared tensor once) away from its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def random_batch(cfg, seed: int):
    """Three rows, the second and third padded (with the padding id, as a tokenizer pads)."""
    g = torch.Generator().manual_seed(seed)
    pad = cfg.pad_token_id
    seq = min(16, cfg.max_position_embeddings - (pad + 1 if cfg.model_type == "roberta" else 0))
    ids = torch.randint(0, cfg.vocab_size, (3, seq), generator=g)
    ids[:, 0] = (pad + 1) % cfg.vocab_size  # a real token first, as [CLS] / <s> is
    if cfg.model_type == "roberta":  # the padding id marks padding in RoBERTa's positions
        ids = ids.masked_fill(ids == pad, (pad + 2) % cfg.vocab_size)
    mask = (torch.arange(seq) < torch.tensor([[seq], [seq // 2], [2]])).long()
    ids = ids.masked_fill(mask == 0, pad)
    types = torch.randint(0, cfg.type_vocab_size, (3, seq), generator=g)
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask)


def max_diffs(a, b, mask) -> dict[str, float]:
    """``{field: max |a - b|}`` over the real tokens, for every field of ``transformers``' output
    ``b`` (bertmini's ``a`` must have each one; its ``logits`` alias of ``prediction_logits`` may be extra)."""
    real = mask.bool()
    diffs = {}
    for field in FIELDS:
        x, y = getattr(a, field, None), getattr(b, field, None)
        if y is None:
            assert x is None or field == "logits", f"{field}: bertmini returns it, transformers does not"
            continue
        assert x is not None, f"{field}: transformers returns it, bertmini does not"
        assert x.shape == y.shape, f"{field}: shapes {tuple(x.shape)} and {tuple(y.shape)}"
        d = (x - y).abs()
        if field in ("last_hidden_state", "logits", "prediction_logits"):
            d = d[real]  # padding positions are outputs nobody reads
        diffs[field] = d.max().item()
    return diffs


def assert_same(a, b, mask):
    diffs = max_diffs(a, b, mask)
    assert diffs, "nothing was compared"
    bad = {k: v for k, v in diffs.items() if not v < ATOL}
    assert not bad, f"outputs differ: {bad}"


def build_hf(name, cfg, seed):
    hf_class = getattr(transformers, name)
    kw = {"add_pooling_layer": seed % 2 == 0} if name in ("RobertaModel", "AlbertModel") else {}
    return perturb(hf_class(cfg, **kw), seed).eval()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("family,name", CLASSES)
def test_from_hf_equals_transformers(family, name, seed):
    torch.manual_seed(seed)
    cfg = random_hf_config(family, seed)
    theirs = build_hf(name, cfg, seed)
    ours = from_hf(theirs)
    assert type(ours) is getattr(OURS[family], name) and not ours.training
    batch = random_batch(cfg, seed)
    with torch.no_grad():
        expected = theirs(**batch)
        assert_same(ours(**batch), expected, batch["attention_mask"])
        if name.endswith("Model"):  # the explicit attention path (the formula written out) too
            assert_same(ours(**batch, output_attentions=True), expected, batch["attention_mask"])


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("family,name", CLASSES)
def test_to_hf_equals_bertmini_and_round_trips(family, name, seed):
    module = OURS[family]
    ours_cfg = getattr(module, f"{family}Config").from_hf(random_hf_config(family, seed + 10))
    kw = {"add_pooling_layer": seed % 2 == 1} if name in ("RobertaModel", "AlbertModel") else {}
    torch.manual_seed(seed)
    ours = perturb(getattr(module, name)(ours_cfg, **kw), seed).eval()
    theirs = to_hf(ours).eval()
    assert type(theirs) is getattr(transformers, name)
    batch = random_batch(theirs.config, seed)
    with torch.no_grad():
        assert_same(ours(**batch), theirs(**batch), batch["attention_mask"])
    # from_hf(to_hf(m)) is m: same class, same weights under the same names
    back = from_hf(theirs).eval()
    assert type(back) is type(ours)
    own, again = ours.state_dict(), back.state_dict()
    assert set(own) == set(again)
    for k in own:
        assert torch.equal(own[k], again[k]), k
    # to_hf(from_hf(m)) is m: the library's class with the same outputs, sharing no storage
    twice = to_hf(back).eval()
    assert type(twice) is type(theirs)
    with torch.no_grad():
        assert_same(twice(**batch), theirs(**batch), batch["attention_mask"])
    word = {"Roberta": "roberta", "Albert": "albert", "Electra": "electra"}[family]
    base = ours if name.endswith("Model") else getattr(ours, word)
    base_hf = theirs if name.endswith("Model") else getattr(theirs, word)
    assert base.embeddings.word_embeddings.weight.data_ptr() != base_hf.embeddings.word_embeddings.weight.data_ptr()


def test_tied_weights_stay_tied():
    cfg = random_hf_config("Albert", 1)
    ours = from_hf(build_hf("AlbertForPreTraining", cfg, 1))
    word = ours.albert.embeddings.word_embeddings.weight
    assert ours.predictions.decoder.weight is word and ours.predictions.decoder.bias is ours.predictions.bias
    rob = from_hf(build_hf("RobertaForMaskedLM", random_hf_config("Roberta", 1), 1))
    assert rob.lm_head.decoder.weight is rob.roberta.embeddings.word_embeddings.weight
    assert rob.lm_head.decoder.bias is rob.lm_head.bias
    gen = from_hf(build_hf("ElectraForMaskedLM", random_hf_config("Electra", 1), 1))
    assert gen.generator_lm_head.weight is gen.electra.embeddings.word_embeddings.weight


@pytest.mark.parametrize("name", ["AlbertForPreTraining", "AlbertForMaskedLM", "RobertaForMaskedLM",
                                  "ElectraForMaskedLM", "ElectraForPreTraining"])
def test_losses_equal_transformers(name):
    family = next(f for f, names in FAMILIES.items() if name in names)
    cfg = random_hf_config(family, 2)
    theirs = build_hf(name, cfg, 2)
    ours = from_hf(theirs)
    batch = random_batch(cfg, 2)
    g = torch.Generator().manual_seed(5)
    ids, real = batch["input_ids"], batch["attention_mask"].bool()
    if name == "ElectraForPreTraining":  # 1 = replaced, 0 = original, one per token
        batch["labels"] = torch.randint(0, 2, ids.shape, generator=g)
    else:
        chosen = (torch.rand(ids.shape, generator=g) < 0.3) & real
        chosen[0, 1] = True
        batch["labels"] = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    if name == "AlbertForPreTraining":  # the library computes a loss only with both labels
        batch["sentence_order_label"] = torch.tensor([0, 1, 1])
    with torch.no_grad():
        a, b = ours(**batch), theirs(**batch)
    assert a.loss is not None and abs(a.loss.item() - b.loss.item()) < ATOL, (a.loss, b.loss)
    if name != "ElectraForPreTraining":  # the logits at the masked positions are the library's there
        theirs_logits = b.prediction_logits if name == "AlbertForPreTraining" else b.logits
        assert (a.logits - theirs_logits[batch["labels"] != IGNORE_INDEX]).abs().max() < ATOL


def test_albert_sharing_settings():
    fields = dict(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=24, max_position_embeddings=16)
    counts = {}
    for sharing in albert.SHARING:
        cfg = albert.AlbertConfig.with_sharing(sharing, **fields)
        model = perturb(albert.AlbertModel(cfg), 3).eval()
        counts[sharing] = model.num_parameters()
        theirs = to_hf(model).eval()  # attention-only: the library has a layer per step, with copies
        batch = random_batch(theirs.config, 3)
        with torch.no_grad():
            assert_same(model(**batch), theirs(**batch), batch["attention_mask"])
    layer = 16 * 24 + 24 + 24 * 16 + 16 + 2 * 16  # a feed-forward (two Linear) and its LayerNorm
    attention = 4 * (16 * 16 + 16) + 2 * 16
    assert counts["attention"] - counts["all"] == 2 * layer  # two more feed-forwards
    assert counts["none"] - counts["attention"] == 2 * attention  # two more attentions
    # groups of uneven length (3 steps through 2 groups of 2 layers each), from the library
    grouped = transformers.AlbertConfig(**fields, num_hidden_groups=2, inner_group_num=2)
    theirs = perturb(transformers.AlbertModel(grouped), 4).eval()
    batch = random_batch(grouped, 4)
    with torch.no_grad():
        assert_same(from_hf(theirs)(**batch), theirs(**batch), batch["attention_mask"])
    shared = albert.AlbertModel(albert.AlbertConfig.with_sharing("attention", **fields))
    groups = shared.encoder.albert_layer_groups
    assert groups[2].albert_layers[0].attention is groups[0].albert_layers[0].attention
    assert groups[2].albert_layers[0].ffn is not groups[0].albert_layers[0].ffn


def test_embedding_project_only_when_widths_differ():
    same = electra.ElectraModel(electra.ElectraConfig(vocab_size=30, hidden_size=16, embedding_size=16,
                                                      num_hidden_layers=1, num_attention_heads=2,
                                                      intermediate_size=20))
    narrow = electra.ElectraModel(electra.ElectraConfig(vocab_size=30, hidden_size=16, embedding_size=6,
                                                        num_hidden_layers=1, num_attention_heads=2,
                                                        intermediate_size=20))
    assert not hasattr(same, "embeddings_project")
    assert tuple(narrow.embeddings_project.weight.shape) == (16, 6)
    assert tuple(narrow.embeddings.word_embeddings.weight.shape) == (30, 6)


def test_roberta_positions_start_past_padding():
    ids = torch.tensor([[0, 5, 6, 2, 1, 1]])
    assert roberta.create_position_ids_from_input_ids(ids, 1).tolist() == [[2, 3, 4, 5, 1, 1]]
    cfg = roberta.RobertaConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=10, max_position_embeddings=10)
    model = roberta.RobertaModel(cfg).eval()
    model(torch.full((1, 8), 4))  # 8 tokens use positions 2..9: they fit
    with pytest.raises(ValueError, match=r"start at pad_token_id \+ 1 = 2.*at most 8 tokens"):
        model(torch.full((1, 9), 4))


def test_training_mode_mlm_loss_equals_eval():
    """The train-mode MLM loss (bertmini.fast's blocked loss) equals the plain loss of eval mode."""
    cfg = electra.ElectraConfig(vocab_size=40, hidden_size=12, embedding_size=5, num_hidden_layers=1,
                                num_attention_heads=3, intermediate_size=20, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = electra.ElectraForMaskedLM(cfg)
    ids = torch.randint(0, 40, (2, 9))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 3] = ids[:, 3]
    train = model.train()(ids, labels=labels)
    assert train.logits is None  # no logits stored while training
    train.loss.backward()
    assert model.electra.embeddings.word_embeddings.weight.grad is not None
    with torch.no_grad():
        plain = model.eval()(ids, labels=labels)
    assert abs(train.loss.item() - plain.loss.item()) < ATOL


# --------------------------------------------------------------------------- bad input, named


def test_electra_generator_wider_than_discriminator():
    disc = electra.ElectraConfig(vocab_size=100, hidden_size=32, embedding_size=16, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64)
    gen = electra.generator_config(disc, 0.25)
    electra.check_generator_fits(gen, disc)  # the ELECTRA shape: a quarter as wide
    assert (gen.hidden_size, gen.num_attention_heads, gen.num_hidden_layers) == (8, 1, 2)
    wide = electra.ElectraConfig(vocab_size=100, hidden_size=48, embedding_size=16, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64)
    with pytest.raises(ValueError, match=r"generator \(hidden_size=48\) is wider than the discriminator "
                                         r"\(hidden_size=32\).*hidden_size of about 8"):
        electra.check_generator_fits(wide, disc)
    other = electra.generator_config(electra.ElectraConfig(**{**disc.to_dict(), "embedding_size": 8}))
    with pytest.raises(ValueError, match="embedding_size=8 differs from the discriminator's 16; the two share"):
        electra.check_generator_fits(other, disc)


@pytest.mark.parametrize("size", [0, -4, 2.5])
@pytest.mark.parametrize("config", [albert.AlbertConfig, electra.ElectraConfig])
def test_embedding_size_that_does_not_fit(config, size):
    with pytest.raises(ValueError, match=rf"{config.__name__}.embedding_size must be a positive int, got "
                                         rf"{size}.*projects up to hidden_size=16. Use an E between 1"):
        config(vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=20, embedding_size=size)


def test_albert_groups_that_do_not_fit():
    with pytest.raises(ValueError, match="num_hidden_groups=3 is more than num_hidden_layers=2"):
        albert.AlbertConfig(num_hidden_layers=2, num_hidden_groups=3)
    with pytest.raises(ValueError, match="sharing='some'; choose one of"):
        albert.AlbertConfig.with_sharing("some")


def test_sop_labels_checked():
    model = albert.AlbertForPreTraining(albert.AlbertConfig(vocab_size=30, embedding_size=4, hidden_size=8,
                                                            num_hidden_layers=1, num_attention_heads=2,
                                                            intermediate_size=10)).eval()
    with pytest.raises(ValueError, match=r"sentence_order_label needs one label per row, 0 .* or 1 \(swapped\)"):
        model(torch.ones(2, 5, dtype=torch.long), sentence_order_label=torch.tensor([0, 2]))


def test_wrong_configs_and_models_refused():
    with pytest.raises(ValueError, match="model_type='bert' is not 'albert'"):
        albert.AlbertConfig.from_dict({"model_type": "bert"})
    cfg = transformers.AlbertConfig(vocab_size=30, embedding_size=4, hidden_size=8, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=10)
    with pytest.raises(TypeError, match="from_hf takes a transformers .*AlbertForMaskedLM.*got AlbertForSequence"):
        from_hf(transformers.AlbertForSequenceClassification(cfg))


@pytest.mark.parametrize("config", [roberta.RobertaConfig, albert.AlbertConfig, electra.ElectraConfig])
def test_config_json_round_trip(config, tmp_path):
    cfg = config(vocab_size=50, hidden_size=16, num_attention_heads=2, intermediate_size=20)
    cfg.to_json(tmp_path / "config.json")
    assert config.from_json(tmp_path) == cfg
    assert cfg.to_hf().model_type == config.model_type
    with pytest.raises(ValueError, match="is not 'bert'"):
        BertConfig.from_json(tmp_path)  # a RoBERTa, ALBERT or ELECTRA config never loads as a BERT one
