"""The chapter-1 vocabulary, trained on the corpus and cached.

The tokenizer (``bertmini.tokenization``) knows nothing of the corpus; this
module joins the two: WordPiece trained on the Wikipedia training articles, the
vocabulary chapters 4 and 5 pretrain and fine-tune with.
"""
from __future__ import annotations

from . import data, runtime
from .tokenization import BertTokenizer, train_wordpiece


def load_or_train_vocab(vocab_size: int = 8000, progress: bool = True) -> BertTokenizer:
    """The book's own vocabulary: WordPiece (``score="gain"``) trained on the
    training split of the Wikipedia corpus, cached at
    ``<cache>/vocab/wiki-wordpiece-<size>.txt``. Deterministic, so every chapter
    gets the same pieces; the first call trains it, later calls read the file."""
    path = runtime.cache_dir() / "vocab" / f"wiki-wordpiece-{vocab_size}.txt"
    if path.is_file():
        try:
            return BertTokenizer.from_vocab(path)
        except ValueError:
            pass  # a damaged cache file: train again and overwrite it
    texts = [a.text for a in data.wiki_articles(split="train")]
    if progress:
        print(f"Training a {vocab_size}-piece WordPiece vocabulary on {len(texts)} Wikipedia articles "
              f"(cached afterwards at {path})")
    pieces = train_wordpiece(texts, vocab_size, progress=progress)
    runtime.atomic_write_bytes(path, ("\n".join(pieces) + "\n").encode("utf-8"))
    return BertTokenizer(pieces)
