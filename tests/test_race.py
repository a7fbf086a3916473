"""Chapter 6a's recipes: RoBERTa's packing, ELECTRA's generator + discriminator, SOP data, the race."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bertmini import nsp, runtime
from bertmini.masking import MaskedBatches
from bertmini.tokenization import BertTokenizer
from bertmini.variants import race
from bertmini.variants.electra import MASKING, ElectraConfig, ElectraPretraining, generator_config
from bertmini.variants.roberta import byte_level_bpe, pack_full_sentences, tokenizer_stats

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away", "and", "then", "slept", "."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizer.from_vocab(path)


def docs_of(tokenizer, articles):
    return nsp.tokenize_articles(articles, tokenizer)


ARTICLES = ["The cat sat on the mat. Then the dog ran far away. The cat slept.",
            "A dog ran. The dog slept on a mat. Then a cat ran far away and slept.",
            "The mat sat. A cat ran."] * 4


# ----------------------------------------------------------------------------- RoBERTa's packing


@pytest.mark.parametrize("whole", [False, True])
def test_packing_keeps_the_text_in_order_with_a_separator_between_articles(tokenizer, whole):
    docs = docs_of(tokenizer, ARTICLES)
    packed = pack_full_sentences(docs, tokenizer, 16, whole_sentences=whole)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    text: list[int] = []
    for row, n in zip(packed.input_ids.tolist(), packed.attention_mask.sum(1).tolist()):
        row = row[:n]
        assert row[0] == cls_id and row[-1] == sep_id and n <= 16
        text += [t for t in row[1:-1]]
    expected: list[int] = []
    for i, doc in enumerate(docs):
        expected += ([sep_id] if i else []) + [t for s in doc for t in s]
    # the rows hold the whole text in order; an article separator may fall on a row's edge, where
    # the row's own [SEP] stands for it
    assert [t for t in text if t != sep_id] == [t for t in expected if t != sep_id]
    inner_seps = sum(t == sep_id for t in text)  # article separators inside rows; others fell on a row's end
    assert inner_seps > 0 and inner_seps + len(packed) >= len(docs) - 1
    assert (packed.token_type_ids == 0).all() and (packed.next_sentence_label == 0).all()
    special = (packed.input_ids == cls_id) | (packed.input_ids == sep_id) | (packed.attention_mask == 0)
    assert torch.equal(packed.special_tokens_mask.bool(), special)


def test_packing_fills_rows_unless_it_must_keep_sentences_whole(tokenizer):
    docs = docs_of(tokenizer, ARTICLES)
    cut = pack_full_sentences(docs, tokenizer, 16)
    whole = pack_full_sentences(docs, tokenizer, 16, whole_sentences=True)
    # every row but the last is full, or one short where an article's [SEP] fell on its end
    assert (cut.attention_mask[:-1].sum(1) >= 15).all() and (cut.attention_mask[:-1].sum(1) == 16).float().mean() > 0.5
    assert whole.num_tokens / whole.input_ids.numel() < cut.num_tokens / cut.input_ids.numel()
    sentences = {tuple(s) for d in docs for s in d}
    sep = tokenizer.sep_token_id
    for row, n in zip(whole.input_ids.tolist(), whole.attention_mask.sum(1).tolist()):
        inner, piece = row[1:n - 1], []
        for t in inner + [sep]:  # whole rows are made of whole sentences
            if t == sep:
                continue
            piece.append(t)
            if tuple(piece) in sentences:
                piece = []
        assert piece == []


def test_packing_refuses_empty_articles_and_short_rows(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        pack_full_sentences([[], []], tokenizer, 16)
    with pytest.raises(ValueError, match="too short"):
        pack_full_sentences(docs_of(tokenizer, ARTICLES), tokenizer, 4)


def test_byte_level_bpe_never_needs_an_unknown_piece(tokenizer):
    bpe = byte_level_bpe(ARTICLES * 5, vocab_size=300)
    text = "The cat sat on 東京 😀"
    assert tokenizer_stats(lambda t: bpe.encode(t).tokens, [text])["unknown_share"] == 0
    assert tokenizer_stats(tokenizer.tokenize, [text])["unknown_share"] > 0
    assert tokenizer_stats(str.split, ["a b c"]) == {"pieces_per_word": 1.0, "unknown_share": 0.0}
    with pytest.raises(ValueError, match="no words"):
        tokenizer_stats(str.split, [" "])


# ----------------------------------------------------------------------------- SOP data


def test_sentence_order_pairs_of_one_sentence_articles_get_a_clear_error():
    with pytest.raises(ValueError, match="at least two sentences"):
        nsp.make_nsp_pairs([[[5, 6, 7]], [[8, 9]]], 64, negatives="same_article")


def test_sentence_order_negatives_are_the_two_segments_swapped(tokenizer):
    docs = docs_of(tokenizer, ARTICLES)
    pos = nsp.make_nsp_pairs(docs, 64, negatives="same_article", nsp_probability=0.0, seed=1)
    neg = nsp.make_nsp_pairs(docs, 64, negatives="same_article", nsp_probability=1.0, seed=1)
    assert [(b, a, 1) for a, b, _ in pos] == neg


# ----------------------------------------------------------------------------- ELECTRA


def electra_pair(seed=0, **kw):
    config = ElectraConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, embedding_size=8, max_position_embeddings=24,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return ElectraPretraining(config, **kw)


def masked_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (4, 12), generator=g)
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(ids.shape, generator=g) < 0.3
    chosen[:, 0] = True
    labels[chosen] = ids[chosen]
    inputs = ids.clone()
    inputs[chosen] = 4
    mask = torch.ones_like(ids)
    mask[3, 9:] = 0
    return inputs, mask, labels


def test_electra_loss_is_the_generator_mlm_plus_fifty_times_the_discriminator():
    pair = electra_pair()
    inputs, mask, labels = masked_batch()
    out = pair(inputs, attention_mask=mask, labels=labels)
    assert pair.disc_weight == 50.0
    assert torch.allclose(out.loss, out.mlm_loss + 50 * out.disc_loss)
    assert pair.generator.electra.embeddings is pair.discriminator.electra.embeddings
    assert pair.generator.generator_lm_head.weight is pair.discriminator.electra.embeddings.word_embeddings.weight
    assert pair.generator.config.hidden_size == generator_config(pair.config).hidden_size < pair.config.hidden_size


def test_a_sample_equal_to_the_original_counts_as_original():
    pair = electra_pair()
    inputs, mask, labels = masked_batch()
    # make the generator certain of one token; where that token is the original, nothing was replaced
    with torch.no_grad():
        pair.generator.generator_lm_head.bias.fill_(-1e4)
        pair.generator.generator_lm_head.bias[7] = 1e4
    labels[labels != -100] = torch.where(torch.rand(int((labels != -100).sum())) < 0.5, 7, 9)
    out = pair(inputs, attention_mask=mask, labels=labels)
    masked = labels != -100
    assert (out.corrupted_ids[masked] == 7).all()
    assert torch.equal(out.replaced[masked].bool(), labels[masked] != 7)
    assert not out.replaced[~masked].any()  # unmasked tokens are the originals
    assert 0 < out.replaced_share < 1


def test_no_gradient_flows_from_the_discriminator_into_the_generator_through_the_sample():
    pair = electra_pair()
    inputs, mask, labels = masked_batch()
    torch.manual_seed(1)
    pair(inputs, attention_mask=mask, labels=labels).loss.backward()
    total = {n: p.grad.clone() for n, p in pair.generator.named_parameters() if "embeddings" not in n}
    pair.zero_grad()
    torch.manual_seed(1)
    pair(inputs, attention_mask=mask, labels=labels).mlm_loss.backward()
    for n, p in pair.generator.named_parameters():
        if "embeddings" not in n:
            assert torch.allclose(p.grad, total[n]), n  # the generator learns from its MLM loss alone


def test_electra_refuses_a_wide_generator_and_unmasked_input():
    config = electra_pair().config
    wide = dataclasses.replace(config, hidden_size=32, intermediate_size=64)
    with pytest.raises(ValueError, match="wider than the discriminator"):
        ElectraPretraining(config, generator=wide)
    inputs, mask, _ = masked_batch()
    with pytest.raises(ValueError, match="masked-LM labels"):
        electra_pair()(inputs, attention_mask=mask)


def test_electra_masking_has_no_random_tokens(tokenizer):
    data = pack_full_sentences(docs_of(tokenizer, ARTICLES * 20), tokenizer, 16)
    torch.manual_seed(0)
    masked_pos = masked_tok = 0
    for batch in MaskedBatches(data, tokenizer, 8, use_nsp=False, **MASKING):
        chosen = batch["labels"] != -100
        ids = batch["input_ids"][chosen]
        masked_pos += int(chosen.sum())
        masked_tok += int((ids == tokenizer.mask_token_id).sum())
        assert ((ids == tokenizer.mask_token_id) | (ids == batch["labels"][chosen])).all()
    assert 0.78 < masked_tok / masked_pos < 0.92  # 85% [MASK], the rest kept


# ----------------------------------------------------------------------------- the race


def test_parameter_counts_at_base_size_are_the_papers():
    rcp = race.race_recipe("cpu").replace(albert_embedding_size=128)
    assert 108e6 < race.encoder_parameters("bert", rcp, 30522, size="base") < 111e6
    assert 11e6 < race.encoder_parameters("albert", rcp, 30522, size="base") < 13e6
    small = {a: race.encoder_parameters(a, rcp, 8000) for a in race.ARMS}
    assert small["albert"] < small["albert_shared_attention"] < small["bert"] == small["scratch"]


@pytest.fixture
def smoke(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMINI_CACHE", str(tmp_path))
    monkeypatch.setenv("BERTMINI_AMP", "fp32")
    docs = docs_of(tokenizer, ARTICLES * 3)
    rcp = race.RaceRecipe(max_length=24, batch_size=4, max_steps=3, warmup_steps=1, eval_every=2, eval_pairs=8)
    heldout = nsp.PretrainingData.from_pairs(nsp.make_nsp_pairs(docs, 24, seed=5), tokenizer, 24)
    from bertmini.pretraining import fixed_masked_batches

    return rcp, docs, fixed_masked_batches(heldout, tokenizer, batch_size=8)


@pytest.mark.parametrize("arm", race.ARMS)
def test_every_arm_trains_and_gives_an_encoder_with_a_pooler(tokenizer, smoke, arm):
    rcp, docs, batches = smoke
    run = race.run_arm(arm, rcp, tokenizer, docs, batches, progress=False)
    encoder = race.encoder_of(arm, run.model)
    assert encoder.pooler is not None
    out = encoder(torch.tensor([[2, 5, 6, 3]]))
    assert out.pooler_output.shape == (1, encoder.config.hidden_size)
    if arm == "scratch":
        assert run.history is None
    else:
        assert len(run.history) == rcp.max_steps and 0 <= run.results["mlm_accuracy"] <= 1
        # encoder_of copies: fine-tuning the copy leaves the arm's model alone
        assert encoder is not race.encoder_of(arm, run.model)
        assert all(p.data_ptr() != q.data_ptr() for p, q in zip(encoder.parameters(), run.model.parameters()))


def test_an_arm_is_trained_once_then_loaded_and_trained_again_for_another_recipe(tokenizer, smoke):
    rcp, docs, batches = smoke
    first = race.load_or_run_arm("albert", rcp, tokenizer, docs, batches, progress=False)
    assert race.arm_dir("albert").is_dir() and not race.arm_dir("albert").with_name(
        race.arm_dir("albert").name + ".partial").exists()
    again = race.load_or_run_arm("albert", rcp, tokenizer, None, batches, progress=False)  # no data needed
    assert again.results == first.results and len(again.history) == len(first.history)
    for p, q in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(p, q)
    longer = race.load_or_run_arm("albert", rcp.replace(max_steps=4), tokenizer, docs, batches, progress=False)
    assert len(longer.history) == 4


def test_the_race_refuses_an_unknown_arm(tokenizer, smoke):
    rcp, docs, batches = smoke
    with pytest.raises(ValueError, match="unknown arm"):
        race.arm_config("xlnet", rcp, 100)
    with pytest.raises(ValueError, match="not pretrained"):
        race.arm_stream("scratch", rcp, tokenizer, docs)


def test_cpu_steps_follow_the_numeric_path(monkeypatch):
    monkeypatch.setenv("BERTMINI_AMP", "fp32")
    assert race.race_recipe("cpu").max_steps == race.CPU_STEPS["fp32"]
    assert race.race_recipe("gpu").size == "mini"
    with pytest.raises(ValueError, match="unknown profile 'tpu'"):
        race.race_recipe("tpu")
    assert runtime.PROFILES
