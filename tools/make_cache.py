"""Fill a cache for a workshop room (`make cache`): what the chapters would otherwise build while people wait.

Builds into ``bertmini.runtime.cache_dir()`` (``BERTMINI_CACHE``, else ``~/.cache/bertmini``), in order:
the verified copies of the data, chapter 1's vocabulary, chapter 4's pretrained model (the longest step:
minutes) and chapter 5a's fine-tuned MiniLM; then makes every file readable, and every folder
enterable, by everyone (``chmod a+rX``), and prints how long each step took, the cache's size and how
attendees use it. What is cached already is loaded, not built again, so a second run is quick.

The pretrained model is kept per profile and numeric path (``pretraining.pretrained_dir``): build the
cache with the ``BERTMINI_PROFILE`` and ``BERTMINI_AMP`` the attendees' machines will use (most laptops
take the fp32 path: ``make cache BERTMINI_AMP=fp32``).
"""
from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

from bertmini import data, runtime
from bertmini.finetuning import load_or_finetune_sentiment_minilm
from bertmini.pretraining import load_or_pretrain, pretrained_dir
from bertmini.train import numeric_path
from bertmini.vocab import load_or_train_vocab


def fill_data() -> None:
    for split in data.SPLITS:
        data.wiki_articles(split), data.sentiment(split), data.ner(split), data.qa(split)
    data.minilm_path()


STEPS = [
    ("data: Wikipedia, sentiment, NER, QA, MiniLM (checked copies)", fill_data),
    ("chapter 1: the 8,000-piece vocabulary", lambda: load_or_train_vocab(8000)),
    ("chapter 4: the pretrained model", lambda: load_or_pretrain()),
    ("chapter 5a: MiniLM fine-tuned on sentiment", lambda: load_or_finetune_sentiment_minilm()),
]


def readable_by_all(root: Path) -> None:
    """``chmod -R a+rX root``: whatever the umask was, attendees may read the cache."""
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            mode = os.stat(name).st_mode
            extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(mode):
                extra |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            os.chmod(name, mode | extra)


def size_of(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> int:
    root = runtime.cache_dir()
    print(f"cache: {root} (profile {runtime.profile()}, numeric path {numeric_path()})")
    total = time.perf_counter()
    for what, build in STEPS:
        start = time.perf_counter()
        build()
        print(f"{time.perf_counter() - start:7.1f} s  {what}", flush=True)
    readable_by_all(root)
    print(f"{time.perf_counter() - total:7.1f} s  in all; {size_of(root) / 1e6:.0f} MB, readable by everyone")
    print(f"the pretrained model: {pretrained_dir()}")
    closed = [p for p in root.parents if not os.stat(p).st_mode & stat.S_IXOTH]
    if closed:
        print(f"note: others cannot enter {closed[0]}; put the cache where attendees can reach it")
    print(f"attendees: copy it (cp -r {root} ~/.cache/bertmini), or point at it read-only for the labs: "
          f"export BERTMINI_CACHE={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
