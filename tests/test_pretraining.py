"""Chapter 4: the pretraining heads against transformers, and the pretraining data pipeline."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from bertmini import hf, nsp, pretraining as P, probes, runtime  # noqa: E402
from bertmini.masking import MaskedBatches  # noqa: E402
from bertmini.config import BertConfig  # noqa: E402
from bertmini.heads import BertForMaskedLM, BertForPreTraining  # noqa: E402
from bertmini.tokenization import BertTokenizer  # noqa: E402

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)


def _hf_config(**kw):
    return transformers.BertConfig(**{**TINY, **kw})


def _batch(vocab=120, batch=3, seq=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    types = torch.zeros_like(ids)
    types[:, seq // 2:] = 1
    mask = torch.ones_like(ids)
    mask[0, -4:] = 0  # one padded row
    labels = torch.where(torch.rand(batch, seq, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[0, -4:] = -100
    labels[1, 2] = ids[1, 2]  # at least one label
    return ids, types, mask, labels, torch.tensor([0, 1, 0][:batch])


@pytest.mark.parametrize("direction", ["from_hf", "to_hf"])
def test_pretraining_logits_and_losses_match_transformers(direction):
    torch.manual_seed(0)
    if direction == "from_hf":
        theirs = transformers.BertForPreTraining(_hf_config()).eval()
        with torch.no_grad():  # non-zero biases, so a forgotten bias would show
            theirs.cls.predictions.bias.normal_(0, 0.5)
        ours = hf.from_hf(theirs).eval()
    else:
        ours = BertForPreTraining(BertConfig(**TINY)).eval()
        with torch.no_grad():
            ours.cls.predictions.bias.normal_(0, 0.5)
            ours.cls.seq_relationship.bias.normal_(0, 0.5)
        theirs = hf.to_hf(ours).eval()
    assert isinstance(ours, BertForPreTraining)
    ids, types, mask, labels, nsp = _batch()
    mine = ours(ids, token_type_ids=types, attention_mask=mask, labels=labels, next_sentence_label=nsp)
    ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels, next_sentence_label=nsp)
    selected = labels != -100
    assert mine.mlm_logits.shape == (int(selected.sum()), TINY["vocab_size"])  # only the masked rows
    torch.testing.assert_close(mine.mlm_logits, ref.prediction_logits[selected], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.loss, ref.loss, atol=1e-5, rtol=1e-5)
    # Without labels, the head scores every position, like transformers.
    dense = ours(ids, token_type_ids=types, attention_mask=mask)
    torch.testing.assert_close(dense.mlm_logits, ref.prediction_logits, atol=1e-5, rtol=1e-5)
    assert dense.loss is None


def test_masked_lm_matches_transformers():
    torch.manual_seed(1)
    ours = BertForMaskedLM(BertConfig(**TINY)).eval()
    with torch.no_grad():
        ours.cls.predictions.bias.normal_(0, 0.5)
    theirs = transformers.BertForMaskedLM(_hf_config()).eval()
    state = ours.state_dict()
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if "position_ids" not in k]
    ids, types, mask, labels, _ = _batch(seed=3)
    mine = ours(ids, token_type_ids=types, attention_mask=mask, labels=labels)
    ref = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)
    torch.testing.assert_close(mine.mlm_logits, ref.logits[labels != -100], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.loss, ref.loss, atol=1e-5, rtol=1e-5)
    assert mine.nsp_logits is None


def test_decoder_is_tied_and_stays_tied_through_training():
    model = BertForPreTraining(BertConfig(**TINY))
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is emb
    assert float(emb[0].detach().abs().sum()) == 0.0  # the padding row, zero as BERT initialises it
    ids, types, mask, labels, nsp = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(ids, types, mask, labels=labels, next_sentence_label=nsp).loss.backward()
    opt.step()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert len({id(p) for p in model.parameters()}) == len(list(model.parameters()))


def test_checkpoint_round_trip_keeps_the_tie(tmp_path):
    from bertmini.checkpoint import load_checkpoint, save_checkpoint

    model = BertForPreTraining(BertConfig(**TINY))
    save_checkpoint(tmp_path / "ckpt", model)
    fresh = BertForPreTraining(BertConfig(**TINY))
    load_checkpoint(tmp_path / "ckpt", fresh)
    assert list(model.state_dict()) == list(fresh.state_dict())  # zip() would stop at the shorter
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert fresh.cls.predictions.decoder.weight is fresh.bert.embeddings.word_embeddings.weight


def test_training_mode_loss_and_gradients_match_the_logits_path():
    """In train mode the MLM loss skips the logits (fast.mlm_loss.masked_lm_loss); with dropout off
    it must give eval mode's loss and gradients, in fp32 and (loosely) under bf16 autocast."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    ids, types, mask, labels, nsp = _batch()
    for amp, tol in ((False, 1e-5), (True, 3e-2)):
        grads = []
        for mode in ("train", "eval"):
            getattr(model, mode)()
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = model(ids, types, mask, labels=labels, next_sentence_label=nsp)
            out.loss.backward()
            grads.append((out.mlm_loss.detach(), out.mlm_accuracy, [p.grad.clone() for p in model.parameters()]))
            assert (out.mlm_logits is None) == (mode == "train")
        (loss_t, acc_t, g_t), (loss_e, acc_e, g_e) = grads
        torch.testing.assert_close(loss_t, loss_e.float(), atol=tol, rtol=tol)
        if not amp:
            assert float(acc_t) == float(acc_e)
        for a, b in zip(g_t, g_e):
            torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_losses_are_optional_and_nsp_alone_works():
    model = BertForPreTraining(BertConfig(**TINY)).eval()
    ids, types, mask, labels, nsp = _batch()
    only_mlm = model(ids, types, mask, labels=labels)
    assert only_mlm.nsp_loss is None and torch.equal(only_mlm.loss, only_mlm.mlm_loss)
    only_nsp = model(ids, types, mask, next_sentence_label=nsp)
    assert only_nsp.mlm_loss is None and torch.equal(only_nsp.loss, only_nsp.nsp_loss)
    assert 0.0 <= float(only_mlm.mlm_accuracy) <= 1.0


def test_bad_labels_get_clear_errors():
    model = BertForPreTraining(BertConfig(**TINY))
    ids, types, mask, labels, nsp = _batch()
    with pytest.raises(ValueError, match="labels has shape"):
        model(ids, labels=labels[:, :-1])
    with pytest.raises(ValueError, match="different vocabulary"):
        model(ids, labels=torch.full_like(ids, 500))
    with pytest.raises(ValueError, match="next_sentence_label"):
        model(ids, next_sentence_label=torch.tensor([0, 2, 1]))


# ----------------------------------------------------------------------------- data


def test_split_sentences():
    text = ("Arthur C. Clarke co-wrote it with Dr. Kubrick. It was released in 1968! "
            "Was it a success? \"Yes.\" The film cost $10.5 million.")
    assert nsp.split_sentences(text) == [
        "Arthur C. Clarke co-wrote it with Dr. Kubrick.", "It was released in 1968!", "Was it a success?",
        "\"Yes.\"", "The film cost $10.5 million."]
    assert nsp.split_sentences("") == []
    with pytest.raises(TypeError, match="takes a string"):  # ours, not an error from deep inside re
        nsp.split_sentences(None)


def _docs(n_docs=40, n_sent=5, length=6):
    # token id = 1000 * doc + 10 * sentence + position: the pair shows where each half came from
    return [[[1000 * d + 10 * s + p for p in range(length)] for s in range(n_sent)] for d in range(n_docs)]


def _origin(segment):
    return {(t // 1000, t % 1000 // 10) for t in segment}


@pytest.mark.parametrize("negatives", nsp.NEGATIVES)
def test_nsp_pairs_follow_or_not(negatives):
    pairs = nsp.make_nsp_pairs(_docs(), max_length=32, seed=0, negatives=negatives)
    labels = [lab for _, _, lab in pairs]
    assert 0.35 < sum(labels) / len(labels) < 0.65  # about half NotNext
    for a, b, label in pairs:
        assert len(a) + len(b) <= 32 - 3 and a and b
        (da, sa_last) = max(_origin(a))
        (db, sb_first) = min(_origin(b))
        if label == nsp.IS_NEXT:
            assert db == da and sb_first == sa_last + 1  # B starts right after A ends
        elif negatives == "other_article":
            assert db != da
        else:  # same article, B is what came just before A
            (da_first, sa_first) = min(_origin(a))
            assert db == da and max(_origin(b))[1] == sa_first - 1


def test_nsp_pairs_are_deterministic_and_truncated():
    docs = _docs(n_docs=10, n_sent=3, length=30)  # sentences longer than half the budget
    one = nsp.make_nsp_pairs(docs, max_length=40, seed=5)
    assert one == nsp.make_nsp_pairs(docs, max_length=40, seed=5)
    assert one != nsp.make_nsp_pairs(docs, max_length=40, seed=6)
    assert all(len(a) + len(b) <= 37 for a, b, _ in one)
    with pytest.raises(ValueError, match="negatives"):
        nsp.make_nsp_pairs(docs, negatives="random")
    with pytest.raises(ValueError, match="two non-empty"):
        nsp.make_nsp_pairs(docs[:1])


def _toy_tokenizer():
    return BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(60)])


def test_topic_baseline_solves_random_negatives_and_not_swapped_ones():
    # each article has its own four topic words; every sentence also has two common words (60, 61)
    tok = _toy_tokenizer()
    docs = [[[5 + 4 * d + s % 4, 5 + 4 * d + (s + 1) % 4, 60, 61] for s in range(6)] for d in range(12)]
    train = nsp.PretrainingData.from_pairs(nsp.make_nsp_pairs(docs, 16, seed=0), tok, 16)
    other = nsp.PretrainingData.from_pairs(nsp.make_nsp_pairs(docs, 16, seed=1), tok, 16)
    same = nsp.PretrainingData.from_pairs(nsp.make_nsp_pairs(docs, 16, seed=1, negatives="same_article"), tok, 16)
    assert probes.frequent_pieces(train, 2) == {60, 61}
    overlap = probes.segment_overlap(other, {60, 61})
    is_next = other.next_sentence_label == nsp.IS_NEXT
    assert bool((overlap[is_next] > 0).all()) and bool((overlap[~is_next] == 0).all())
    result = probes.topic_baseline(train, {"other": other, "same": same}, stopwords=2)
    assert result["train"] == 1.0 and result["other"] == 1.0
    # swapped pairs share their words exactly as true pairs do: the rule says IsNext for all of them
    assert result["same"] == pytest.approx(float((same.next_sentence_label == nsp.IS_NEXT).float().mean()))


def test_tensors_and_masked_batches():
    tok = _toy_tokenizer()
    pairs = [([5, 6, 7], [8, 9], 0), ([10], [11, 12, 13, 14], 1)] * 8
    data = nsp.PretrainingData.from_pairs(pairs, tok, max_length=12)
    assert data.input_ids[0].tolist() == [2, 5, 6, 7, 3, 8, 9, 3, 0, 0, 0, 0]
    assert data.token_type_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert data.special_tokens_mask[0].tolist() == [1, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1]
    stream = MaskedBatches(data, tok, batch_size=4, mlm_probability=0.5)
    torch.manual_seed(0)
    batches = list(stream)
    assert len(batches) == 4
    for b in batches:
        assert b["input_ids"].shape[1] == 8  # cut to the longest row, no padding columns
        assert set(b) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    # [CLS], [SEP] and padding are never selected; something is
    all_labels = torch.cat([b["labels"] for b in batches])
    assert not torch.isin(all_labels, torch.tensor([0, 2, 3])).any()
    assert (all_labels != -100).any()
    no_nsp = MaskedBatches(data, tok, 4, use_nsp=False).mask(data.batch(torch.arange(4)))
    assert "next_sentence_label" not in no_nsp
    # masking draws from the global random state, which train() owns: same seed, same batches
    torch.manual_seed(0)
    again = list(stream)
    assert len(again) == len(batches)  # zip() below would pass on an exhausted, one-shot stream
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(batches, again))
    # ... and the masks of the same rows follow the seed (a stream with its own fixed generator
    # would repeat its masks every epoch, under a new shuffle)
    rows = data.batch(torch.arange(16))
    masks = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        masks.append(stream.mask(rows)["labels"])
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    with pytest.raises(ValueError, match="batch_size"):
        MaskedBatches(data, tok, batch_size=100)


def test_pretrain_is_deterministic_and_saves_and_loads(tmp_path):
    from bertmini.hf import load_pretrained

    tok = _toy_tokenizer()
    docs = [[[5 + (d * 7 + s * 3 + p) % 60 for p in range(4)] for s in range(4)] for d in range(30)]
    pairs = nsp.make_nsp_pairs(docs, max_length=16, seed=0)
    data = nsp.PretrainingData.from_pairs(pairs, tok, max_length=16)
    evals = P.fixed_masked_batches(data, tok, batch_size=32)
    rcp = P.recipe("smoke", max_length=16, batch_size=8, max_steps=6, eval_every=3, amp=None)
    one = P.pretrain(rcp, tokenizer=tok, train_data=data, eval_batches=evals, progress=False)
    two = P.pretrain(rcp, tokenizer=tok, train_data=data, eval_batches=evals, progress=False)
    assert list(one.model.state_dict()) == list(two.model.state_dict())
    for (k, a), b in zip(one.model.state_dict().items(), two.model.state_dict().values()):
        assert torch.equal(a, b), k
    # the weights moved: two untrained models (or a loader that fills in a fresh seeded
    # model) would agree just as well
    runtime.seed_everything(rcp.seed)
    init = BertForPreTraining(rcp.config(len(tok)))
    assert not torch.equal(init.bert.embeddings.word_embeddings.weight,
                           one.model.bert.embeddings.word_embeddings.weight)
    assert len(one.history) == 6 and [e["step"] for e in one.history.evals] == [3, 6]
    assert set(one.results) >= {"mlm_accuracy", "mlm_loss", "nsp_accuracy"}

    P.save_pretrained(one, tmp_path / "run")
    model, tok2, history, results = P.load_saved(tmp_path / "run")
    assert tok2.ids_to_tokens == tok.ids_to_tokens and results == one.results
    assert history.records == one.history.records
    assert list(one.model.state_dict()) == list(model.state_dict())
    for (k, a), b in zip(one.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    encoder = load_pretrained(tmp_path / "run")  # the encoder alone, through chapter 3's loader
    assert torch.equal(encoder.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    with pytest.raises(FileNotFoundError, match="config.json"):
        P.load_saved(tmp_path / "nothing")


def test_pretrain_killed_part_way_resumes_from_its_checkpoints(tmp_path, monkeypatch):
    import bertmini.train as T

    tok = _toy_tokenizer()
    docs = [[[5 + (d * 7 + s * 3 + p) % 60 for p in range(4)] for s in range(4)] for d in range(30)]
    data = nsp.PretrainingData.from_pairs(nsp.make_nsp_pairs(docs, max_length=16, seed=0), tok, max_length=16)
    evals = P.fixed_masked_batches(data, tok, batch_size=32)
    rcp = P.recipe("smoke", max_length=16, batch_size=8, max_steps=8, eval_every=2, amp=None)
    whole = P.pretrain(rcp, tokenizer=tok, train_data=data, eval_batches=evals, progress=False)

    real_step, steps = T.train_step, []

    def dies_at_step_6(*args, **kwargs):  # the kernel killed during step 6: steps 1-5 done, 4 saved
        if len(steps) == 5:
            raise KeyboardInterrupt
        steps.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(T, "train_step", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        P.pretrain(rcp, tokenizer=tok, train_data=data, eval_batches=evals, progress=False,
                   checkpoint_dir=tmp_path / "partial", checkpoint_every=2)
    steps_after = []

    def counted(*args, **kwargs):
        steps_after.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(T, "train_step", counted)
    from bertmini.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "partial", BertForPreTraining(rcp.config(len(tok))))["step"] == 4
    resumed = P.pretrain(rcp, tokenizer=tok, train_data=data, eval_batches=evals, progress=False,
                         checkpoint_dir=tmp_path / "partial", checkpoint_every=2)
    assert len(steps_after) == 4  # steps 5-8 only: it went on from step 4, not from the start
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in resumed.history.records] == [r["loss"] for r in whole.history.records]
    assert resumed.results["mlm_accuracy"] == whole.results["mlm_accuracy"]


def test_recipes():
    assert P.recipe("book", profile="cpu").size == "tiny"
    assert P.recipe("book", profile="gpu").max_steps > P.recipe("book", profile="cpu").max_steps
    assert not P.recipe("book", use_nsp=False).use_nsp
    with pytest.raises(ValueError, match="preset"):
        P.recipe("huge")
    with pytest.raises(ValueError, match="unknown profile 'tpu'"):
        P.recipe("book", profile="tpu")
    with pytest.raises(TypeError, match="unknown Recipe field"):
        P.recipe("book", layers=3)


def test_the_cpu_recipe_takes_the_steps_of_its_numeric_path(monkeypatch):
    for path, steps in P.CPU_STEPS.items():
        monkeypatch.setenv("BERTMINI_AMP", path)
        assert P.recipe("book", profile="cpu").max_steps == steps
        assert P.pretrained_dir("book").name.endswith(f"-{path}")  # one cached model per path
    assert P.CPU_STEPS["fp32"] < P.CPU_STEPS["bf16"]


def test_class_cohesion_is_an_auc_of_the_embedding_similarities():
    """Hand cases: a class whose members share one direction scores 1; a class of random
    vectors about 0.5; words outside the vocabulary are left out, and fewer than two refused."""
    tok = BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)])
    model = BertForPreTraining(BertConfig(**TINY))
    emb = model.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(0)))
        emb[5:9] = torch.randn(32) + 0.01 * torch.randn(4, 32)  # w0..w3: nearly one vector
    tight = probes.class_cohesion(model, tok, ["w0", "w1", "w2", "w3", "nope"])
    assert tight["used"] == ["w0", "w1", "w2", "w3"] and tight["auc"] == 1.0
    loose = probes.class_cohesion(model, tok, [f"w{i}" for i in range(20, 60)])
    assert 0.4 < loose["auc"] < 0.6, loose["auc"]
    half = probes.class_cohesion(model, tok, ["w0", "w1", "w50", "w51"])  # 2 of the 12 pairs are tight
    assert 0.5 < half["auc"] < 1.0
    with pytest.raises(ValueError, match="at least two words"):
        probes.class_cohesion(model, tok, ["w0", "nope"])
