"""WordPiece trainer time, and encode throughput: bertmini's teaching encoder and
its fast path against `tokenizers` / `transformers`, in one run.

* trainer: ``load_or_train_vocab``'s work (count words + 8,000-piece WordPiece
  with ``FastWordPieceTrainer``, ``score="gain"``) on the Wikipedia training
  articles, against `tokenizers`' ``WordPieceTrainer`` on the same texts. The
  issue's target is 30 s.
* encode: all articles (train, validation, test) with the real bert-base-uncased
  vocabulary: ``BertTokenizer.encode`` (pure Python), ``to_fast(...)`` (the same
  vocabulary in `tokenizers`), and ``transformers.BertTokenizerFast``; the median
  of a few repeats, alternating between them so background load hits all alike.

    .venv/bin/python bench/tokenizer_bench.py      # ~1.5 min on 2 CPU cores
    BENCH_REPEATS=1 .venv/bin/python bench/tokenizer_bench.py

Ratios are printed as ``name=X.XX``; the last lines are ``trainer_seconds=...`` and
``trainer_meets_30s=True|False``.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

from bertmini import data  # noqa: E402
from bertmini.tokenization import SPECIAL_TOKENS, BertTokenizer, to_fast  # noqa: E402
from bertmini.vocab import load_or_train_vocab  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def bench_trainer() -> tuple[float, float]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    texts = [a.text for a in data.wiki_articles("train")]
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("BERTMINI_CACHE")
        os.environ["BERTMINI_CACHE"] = cache   # cold: nothing cached, so it really trains
        try:
            t0 = time.perf_counter()
            tok = load_or_train_vocab(8000, progress=False)
            ours = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("BERTMINI_CACHE")
            else:
                os.environ["BERTMINI_CACHE"] = old
    assert len(tok) == 8000
    hf = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t0 = time.perf_counter()
    hf.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=8000, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    theirs = time.perf_counter() - t0
    return ours, theirs


def bench_encode() -> dict[str, float]:
    from transformers import BertTokenizerFast
    texts = [a.text for a in data.wiki_articles()]
    ours = BertTokenizer.from_vocab(data.minilm_vocab_path())
    fast = to_fast(ours)
    hf = BertTokenizerFast(vocab=str(data.minilm_vocab_path()), do_lower_case=True)
    n_tokens = sum(len(e.ids) for e in fast.encode_batch(texts))

    def run_ours():
        ours._cache.clear()          # measure the encoder, not a warm word cache
        for t in texts:
            ours.encode(t)

    runs = {"bertmini": run_ours,
            "bertmini.to_fast": lambda: fast.encode_batch(texts),
            "BertTokenizerFast": lambda: hf(texts)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(REPEATS):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: n_tokens / statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ours_s, theirs_s = bench_trainer()
    print(f"trainer: bertmini {ours_s:.1f} s (count words + 8,000 merges), "
          f"tokenizers {theirs_s:.1f} s")
    print(f"trainer_ratio_bertmini_over_tokenizers={ours_s / theirs_s:.2f}")
    speeds = bench_encode()
    for name, s in speeds.items():
        print(f"encode {name:20} {s / 1e3:8.0f}k tokens/s")
    print(f"encode_ratio_fast_over_bertmini={speeds['bertmini.to_fast'] / speeds['bertmini']:.2f}")
    print(f"encode_ratio_bertmini_over_BertTokenizerFast={speeds['bertmini'] / speeds['BertTokenizerFast']:.2f}")
    print(f"encode_ratio_fast_over_BertTokenizerFast={speeds['bertmini.to_fast'] / speeds['BertTokenizerFast']:.2f}")
    print(f"trainer_seconds={ours_s:.1f}")
    print(f"trainer_meets_30s={ours_s <= 30}")


if __name__ == "__main__":
    main()
