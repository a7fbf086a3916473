"""bertmini's tokenizer against the real thing: `transformers`' BertTokenizerFast
with the real bert-base-uncased vocabulary, on the whole Wikipedia corpus and on
a hard set (tests/fixtures/tokenization_hard_cases.json); the fast WordPiece
trainer against the readable one; bad input."""
from __future__ import annotations

import json
import math
import os
import unicodedata
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bertmini import data  # noqa: E402
from bertmini.fast.wordpiece_trainer import FastWordPieceTrainer  # noqa: E402
from bertmini.tokenization import (  # noqa: E402
    SCORES, SPECIAL_TOKENS, BertTokenizer, WordPieceTrainer, basic_tokenize, count_words, normalize,
    to_fast, to_hf_fast, train_wordpiece)
from bertmini.vocab import load_or_train_vocab  # noqa: E402

HARD = json.loads((Path(__file__).parent / "fixtures" / "tokenization_hard_cases.json").read_text())


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(data.minilm_vocab_path())


@pytest.fixture(scope="module")
def hf():
    from transformers import BertTokenizerFast
    # transformers 5 ignores the vocab_file keyword here (it builds a 5-token vocab); `vocab=` reads the file.
    t = BertTokenizerFast(vocab=str(data.minilm_vocab_path()), do_lower_case=True)
    assert len(t) == 30522
    return t


@pytest.fixture(scope="module")
def articles():
    return [a.text for a in data.wiki_articles()]


def _theirs(batch, i):
    return (batch["input_ids"][i], batch["token_type_ids"][i], batch["special_tokens_mask"][i],
            [tuple(o) for o in batch["offset_mapping"][i]], batch.word_ids(i))


def _ours(e):
    return e.ids, e.token_type_ids, e.special_tokens_mask, e.offsets, e.word_ids


def _call(hf, texts, pairs=None, **kw):
    return hf(texts, pairs, return_offsets_mapping=True, return_special_tokens_mask=True, **kw)


# ---------------------------------------------------------------- parity

def test_real_vocab_loads(tok):
    assert len(tok) == 30522
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0, 100, 101, 102, 103)
    assert tok.ids_to_tokens[tok.vocab["##ing"]] == "##ing"


def test_every_wikipedia_article_matches_transformers(tok, hf, articles):
    assert len(articles) > 9000
    theirs = _call(hf, articles)
    mismatches = [i for i, text in enumerate(articles) if _ours(tok.encode(text)) != _theirs(theirs, i)]
    assert not mismatches, f"{len(mismatches)} articles differ, first: {articles[mismatches[0]][:200]!r}"


def test_hard_set_matches_transformers(tok, hf):
    texts = HARD["texts"]
    theirs = _call(hf, texts)
    for i, text in enumerate(texts):
        assert _ours(tok.encode(text)) == _theirs(theirs, i), ascii(text)
        assert tok.tokenize(text) == hf.tokenize(text), ascii(text)


@pytest.mark.parametrize("max_length", HARD["max_lengths"])
def test_pairs_under_truncation_match_transformers(tok, hf, max_length):
    # Batch call: transformers' single-pair call drops an empty second text, its batch
    # call (and tokenizers) keep it as an empty segment, as we do.
    firsts, seconds = zip(*HARD["pairs"])
    theirs = _call(hf, list(firsts), list(seconds), max_length=max_length, truncation=True)
    for i, (a, b) in enumerate(HARD["pairs"]):
        ours = tok.encode(a, b, max_length=max_length, truncation=True)
        assert len(ours) <= max_length
        assert _ours(ours) == _theirs(theirs, i), (a, b, max_length)


def test_single_truncation_matches_transformers(tok, hf, articles):
    theirs = _call(hf, articles[:50], max_length=20, truncation=True)
    for i, text in enumerate(articles[:50]):
        assert _ours(tok.encode(text, max_length=20, truncation=True)) == _theirs(theirs, i)


def test_every_code_point_normalizes_like_tokenizers():
    """Python's unicodedata is newer than the tables inside tokenizers; the
    differences must stay few and away from the scripts and symbols people type."""
    from tokenizers import normalizers, pre_tokenizers
    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()

    def theirs(s):
        return [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(s))]

    differ = []
    cps = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    for k in range(0, len(cps), 2048):
        block = cps[k:k + 2048]
        text = " ".join(chr(cp) for cp in block)
        if basic_tokenize(text) != theirs(text):
            differ += [cp for cp in block if basic_tokenize(f"a{chr(cp)}b") != theirs(f"a{chr(cp)}b")]
    assert len(differ) < 700, len(differ)
    assert all(cp >= 0x600 for cp in differ), [hex(c) for c in differ if c < 0x600]  # Latin..Hebrew agree
    for lo, hi in [(0x2E80, 0x2E42), (0x3000, 0xA000), (0xAC00, 0xD7A4), (0x1F000, 0x1FB00)]:
        assert not [cp for cp in differ if lo <= cp < hi], (hex(lo), hex(hi))


def test_decode_matches_transformers(tok, hf, articles):
    for text in articles[:300] + HARD["texts"]:
        ids = hf(text)["input_ids"]
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
        assert tok.decode(ids, skip_special_tokens=False) == hf.decode(ids)
    assert tok.decode(torch.tensor(tok.encode("Hello, world!").ids)) == "hello, world!"


def test_fast_paths_give_identical_ids(tok, articles):
    fast, hf_fast = to_fast(tok), to_hf_fast(tok)
    texts = articles[:500] + HARD["texts"]
    for text, e in zip(texts, fast.encode_batch(texts)):
        ours = tok.encode(text)
        assert e.ids == ours.ids and e.offsets == ours.offsets and e.word_ids == ours.word_ids
    pairs = HARD["pairs"]
    for (a, b), e in zip(pairs, fast.encode_batch([tuple(p) for p in pairs])):
        assert e.ids == tok.encode(a, b).ids and e.type_ids == tok.encode(a, b).token_type_ids
    assert hf_fast(texts[:100])["input_ids"] == [tok.encode(t).ids for t in texts[:100]]
    assert len(hf_fast) == len(tok) and hf_fast.mask_token_id == tok.mask_token_id


def test_fast_path_of_a_trained_vocab(articles):
    small = BertTokenizer(train_wordpiece(articles[:300], 600))
    fast, hf_fast = to_fast(small), to_hf_fast(small)
    for text in articles[300:400] + HARD["texts"]:
        assert fast.encode(text).ids == small.encode(text).ids == hf_fast(text)["input_ids"]


# ---------------------------------------------------------------- API

def test_encode_fields_and_word_ids(tok):
    e = tok.encode("Unaffable tokenization!", "Second one.")
    assert e.tokens == ["[CLS]", "una", "##ffa", "##ble", "token", "##ization", "!", "[SEP]",
                        "second", "one", ".", "[SEP]"]
    assert e.token_type_ids == [0] * 8 + [1] * 4
    assert e.special_tokens_mask == [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert e.attention_mask == [1] * 12
    assert e.word_ids == [None, 0, 0, 0, 1, 1, 2, None, 0, 1, 2, None]
    assert e.word_starts() == [False, True, False, False, True, False, True, False, True, True, True, False]
    assert e.offsets[1:4] == [(0, 3), (3, 6), (6, 9)]
    assert "Unaffable tokenization!"[slice(*e.offsets[5])] == "ization"


def test_encode_batch_pads_like_transformers(tok, hf):
    texts = ["a short one", "a rather longer text about tokenization", ""]
    pairs = ["x", "y z", "w"]
    ours = tok.encode_batch(texts, pairs)
    theirs = hf(texts, pairs, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    for key in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask"):
        assert ours[key].dtype == torch.long
        assert torch.equal(ours[key], theirs[key]), key
    fixed = tok.encode_batch(texts, max_length=6, truncation=True, padding="max_length", return_tensors=None)
    assert [len(r) for r in fixed["input_ids"]] == [6, 6, 6]
    assert fixed["input_ids"][2] == [101, 102, 0, 0, 0, 0]


def test_save_and_reload(tok, tmp_path):
    tok.save(tmp_path / "vocab.txt")
    again = BertTokenizer.from_vocab(tmp_path)
    assert again.ids_to_tokens == tok.ids_to_tokens and again.vocab == tok.vocab


def test_literal_special_tokens(tok):
    e = tok.encode("Paris is the [MASK] of France.")
    assert tok.mask_token_id in e.ids and e.special_tokens_mask[e.ids.index(tok.mask_token_id)] == 0
    assert "[mask]" not in tok.decode(e.ids) and tok.mask_token_id not in tok.encode("[mask]").ids


# ---------------------------------------------------------------- trainer

def _both_trainers(counts, vocab_size, **kw):
    """(vocabulary, merges) of the readable trainer and of its fast twin."""
    plain, fast = WordPieceTrainer(vocab_size, **kw), FastWordPieceTrainer(vocab_size, **kw)
    return (plain.train(counts), plain.merges), (fast.train(counts), fast.merges)


@pytest.mark.parametrize("score", sorted(SCORES))
def test_fast_trainer_equals_readable_trainer_on_wikipedia(score):
    counts = count_words([a.text for a in data.wiki_articles("train")][:200])
    alphabet = WordPieceTrainer()
    alphabet.initial_words(counts)
    plain, fast = _both_trainers(counts, len(SPECIAL_TOKENS) + len(alphabet.alphabet) + 80, score=score)
    assert len(plain[1]) == 80
    assert fast == plain   # same pieces in the same order, same counts and scores


TOY = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}


@pytest.mark.parametrize("score", sorted(SCORES))
@pytest.mark.parametrize("counts", [TOY, {"aaaa": 3, "aaa": 2, "ba": 1}, {"ab": 3, "abab": 2, "ba": 4}],
                         ids=["toy", "overlapping", "repeats"])
def test_fast_trainer_equals_readable_trainer_on_hand_cases(counts, score):
    for min_frequency in (1, 2, 4):
        for limit_alphabet in (None, 2):
            plain, fast = _both_trainers(counts, 40, score=score, min_frequency=min_frequency,
                                         limit_alphabet=limit_alphabet)
            assert fast == plain, (min_frequency, limit_alphabet)


def test_trainer_ties_and_min_frequency():
    # all three pairs score 0.5 by likelihood: the higher count wins, then the earlier pieces
    ties = {"ab": 2, "ed": 1, "cd": 1}
    for trainer in (WordPieceTrainer(20, min_frequency=1, score="likelihood"),
                    FastWordPieceTrainer(20, min_frequency=1, score="likelihood")):
        trainer.train(ties)
        assert [(m.token, m.count, m.score) for m in trainer.merges] == [
            ("ab", 2, 0.5), ("cd", 1, 0.5), ("ed", 1, 1.0)]
    for cls in (WordPieceTrainer, FastWordPieceTrainer):   # a pair seen once is never merged
        trainer = cls(20, min_frequency=2, score="count")
        vocab = trainer.train({"ab": 3, "cd": 1})
        assert [m.token for m in trainer.merges] == ["ab"] and vocab[-1] == "ab" and len(vocab) < 20


def test_trainer_on_a_tiny_corpus():
    trainer = WordPieceTrainer(len(SPECIAL_TOKENS) + 9 + 1, score="likelihood", min_frequency=1)
    vocab = trainer.train(TOY)
    # ##g ##s co-occur in all 5 uses of ##s: 5 / (20 * 5) = 0.05 beats every other pair
    assert trainer.merges[0].token == "##gs" and math.isclose(trainer.merges[0].score, 5 / (20 * 5))
    assert vocab[:5] == list(SPECIAL_TOKENS) and "##u" in vocab and "h" in vocab


def test_trainer_is_deterministic_and_covers_the_corpus(articles):
    a = train_wordpiece(articles[:200], 700)
    b = train_wordpiece(list(reversed(articles[:200])), 700)
    assert a == b and len(a) == 700 and len(set(a)) == 700
    small = BertTokenizer(a)
    assert small.unk_token_id not in small.encode(" ".join(articles[:200])).ids  # every char is in the alphabet


def test_load_or_train_vocab_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMINI_CACHE", str(tmp_path))
    first = load_or_train_vocab(2000, progress=False)
    path = tmp_path / "vocab" / "wiki-wordpiece-2000.txt"
    assert path.is_file() and len(first) == 2000
    again = load_or_train_vocab(2000, progress=False)
    assert again.ids_to_tokens == first.ids_to_tokens
    texts = [a.text for a in data.wiki_articles("validation")][:200]
    words = sum(len(basic_tokenize(t)) for t in texts)
    pieces = sum(len(first.tokenize(t)) for t in texts)
    assert 1.0 < pieces / words < 1.8


# ---------------------------------------------------------------- bad input

def test_bad_input_gets_clear_errors(tok, tmp_path):
    with pytest.raises(TypeError, match="None"):
        tok.encode(None)
    with pytest.raises(TypeError, match="must be a str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="pair"):
        tok.encode("ok", 42)
    with pytest.raises(FileNotFoundError, match="no vocabulary file"):
        BertTokenizer.from_vocab(tmp_path / "missing.txt")
    (tmp_path / "v.txt").write_text("hello\nworld\n[UNK]\n")
    with pytest.raises(ValueError, match=r"\[PAD\].*\[CLS\]"):
        BertTokenizer.from_vocab(tmp_path / "v.txt")
    with pytest.raises(ValueError, match="needs 3 special tokens"):
        tok.encode("a", "b", max_length=2, truncation=True)
    with pytest.raises(ValueError, match="needs 2 special tokens"):
        tok.encode("a", max_length=1, truncation=True)
    with pytest.raises(ValueError, match="truncation=True"):
        tok.encode("one two three", max_length=3)
    with pytest.raises(ValueError, match="needs a max_length"):
        tok.encode("one", truncation=True)
    with pytest.raises(TypeError, match="list of strings"):
        tok.encode_batch("one text")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([999_999])
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(["some text"], 3)
    with pytest.raises(ValueError, match="no words"):
        train_wordpiece(["", "   "], 100)
    with pytest.raises(TypeError, match="list of texts"):
        train_wordpiece("one string", 100)


def test_normalize_examples():
    assert normalize("Héllo\u200bWörld\tİ") == "helloworld i"  # İ: NFD gives I + a dot mark, stripped
    assert normalize("北京") == " 北  京 "
    assert unicodedata.category(normalize("\u0378")) == "Cn"  # unassigned code points are kept
