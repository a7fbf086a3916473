"""BERT's tokenizer from scratch: basic tokenizer, WordPiece encoder and trainer.

BERT (uncased) turns text into ids in three steps:

1. **Normalize** each character (``normalize``): drop NUL, U+FFFD and control or
   format characters (zero-width spaces included); map whitespace to a space;
   put spaces around CJK ideographs; strip accents (NFD, then drop non-spacing
   marks); lowercase.
2. **Pre-tokenize** (``pre_tokenize``): split on whitespace and make every
   punctuation character a word of its own.
3. **WordPiece** (``BertTokenizer.wordpiece``): split each word greedily into the
   longest vocabulary pieces from the left, continuations marked ``##``; a word
   that cannot be covered, or is longer than 100 characters, becomes ``[UNK]``.

``BertTokenizer.encode`` then adds ``[CLS]`` / ``[SEP]``, segment ids and
truncation. The behaviour is that of ``transformers.BertTokenizerFast`` (the
``tokenizers`` library), which the tests check id for id on the whole Wikipedia
corpus, with offsets. Special tokens typed in the text (``"Paris is the [MASK]
of France"``) are matched literally before normalization, as ``transformers`` does.

``train_wordpiece`` learns a vocabulary with WordPiece's likelihood score
(merge the pair with the highest ``count(ab) / (count(a) * count(b))``), keeping
pair counts up to date incrementally so that an 8,000-piece vocabulary trains in
seconds. ``load_or_train_vocab`` caches the book's vocabulary.

Not handled:

* cased BERT (no lowercasing / accent stripping) and other languages' options;
* characters added to Unicode after about 2016: ``tokenizers`` classifies marks,
  punctuation and format characters with older tables than Python's
  ``unicodedata``, so a few hundred rarely used code points (new scripts and
  marks; none in Latin, Greek, Cyrillic, CJK or emoji) are handled differently;
  ``tests/test_tokenization.py`` counts them;
* ``stride`` / overflowing tokens and truncation strategies other than BERT's
  "longest first".
"""
from __future__ import annotations

import heapq
import math
import os
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"
MAX_WORD_CHARS = 100  # longer words become [UNK] (BERT's max_input_chars_per_word)

# --------------------------------------------------------------------------
# 1. Normalization and pre-tokenization (the "basic tokenizer")
# --------------------------------------------------------------------------

# Unicode White_Space characters that survive the control-character filter
# (\v, \f and U+0085 are control characters, so they are dropped instead).
_WHITESPACE = " \t\n\r\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CHUNK = re.compile(f"[^{_WHITESPACE}]+")
_WHITESPACE_SET = frozenset(" \t\n\r\u00a0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)}
# ASCII punctuation is split even where Unicode calls it a symbol ($ + < = > ^ ` |).
_ASCII_PUNCT = "!-/:-@\\[-`{-~"
_ASCII_PIECES = re.compile(f"[^{_ASCII_PUNCT}]+|[{_ASCII_PUNCT}]")
_SPECIAL_IN_TEXT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def is_control(ch: str) -> bool:
    """Characters BERT deletes: control (Cc), format (Cf, e.g. zero-width space),
    private-use (Co) and surrogates, but not tab/newline/return (whitespace).
    Unassigned code points (Cn) are kept, as ``tokenizers`` keeps them."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def is_punctuation(ch: str) -> bool:
    """ASCII punctuation (including $+<=>^`|) or any Unicode P* character."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_chinese_char(cp: int) -> bool:
    """CJK Unified Ideographs (and extensions, compatibility forms): BERT splits
    these one per word. Hiragana, katakana and hangul are *not* in these blocks."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F
            or 0x2B920 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _normalize_char(ch: str) -> str:
    """One original character -> its normalized string ("" if deleted).
    Order as in ``tokenizers``' BertNormalizer: clean, (CJK), strip accents, lowercase."""
    if ch == "\x00" or ch == "\ufffd" or is_control(ch):
        return ""
    if ch in _WHITESPACE_SET:
        return " "
    out = []
    for d in unicodedata.normalize("NFD", ch):
        if unicodedata.category(d) != "Mn":      # strip accents
            out.append(d.lower())                # per character, like Rust's to_lowercase
    return "".join(out)


def normalize(text: str) -> str:
    """BERT-uncased normalization of ``text`` (CJK ideographs get spaces around them)."""
    out = []
    for ch in text:
        n = _normalize_char(ch)
        out.append(f" {n} " if n and is_chinese_char(ord(ch)) else n)
    return "".join(out)


# A word: its normalized text and, for each of its characters, the span
# (start, end) in the original text it came from.  ``starts is None`` means the
# simple ASCII case: character i came from base + i.
@dataclass(frozen=True)
class Word:
    text: str
    base: int
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None

    def span(self, i: int, j: int) -> tuple[int, int]:
        """Original-text span of normalized characters ``i..j`` (j exclusive)."""
        if self.starts is None:
            return self.base + i, self.base + j
        return self.starts[i], self.ends[j - 1]


def _split_chunk(chunk: str, base: int, out: list[Word]) -> None:
    """Pre-tokenize one whitespace-free stretch of original text starting at ``base``."""
    if chunk.isascii() and chunk.isprintable():     # fast path: most of English
        for m in _ASCII_PIECES.finditer(chunk.lower()):
            out.append(Word(m.group(), base + m.start()))
        return
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def flush():
        if chars:
            out.append(Word("".join(chars), starts[0], tuple(starts), tuple(ends)))
            chars.clear(), starts.clear(), ends.clear()

    for k, ch in enumerate(chunk, start=base):
        norm = _normalize_char(ch)
        if not norm:
            continue
        alone = is_chinese_char(ord(ch))
        for n in norm:
            if n == " ":                  # (only from whitespace, already split)
                flush()
            elif alone or is_punctuation(n):
                flush()
                out.append(Word(n, k, (k,), (k + 1,)))
            else:
                chars.append(n), starts.append(k), ends.append(k + 1)
    flush()


def pre_tokenize(text: str, base: int = 0) -> list[Word]:
    """Normalize and split ``text`` into words, each knowing its original span."""
    words: list[Word] = []
    for m in _CHUNK.finditer(text):
        _split_chunk(m.group(), base + m.start(), words)
    return words


def basic_tokenize(text: str) -> list[str]:
    """The words BERT's basic tokenizer makes of ``text``:
    ``basic_tokenize("Héllo, world!") == ["hello", ",", "world", "!"]``."""
    _check_text(text, "text")
    return [w.text for w in pre_tokenize(text)]


def _check_text(text, name: str) -> None:
    if text is None:
        raise TypeError(f"{name} is None; pass a string (use '' for an empty text).")
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}: {text!r:.60}. "
                        "Decode bytes first (data.decode('utf-8')) or pass str(x).")


# --------------------------------------------------------------------------
# 2. Encodings
# --------------------------------------------------------------------------

@dataclass
class Encoding:
    """One encoded text (or pair), the fields ``transformers`` returns.

    ``offsets[i]`` is the (start, end) character span of token i in the original
    text of its segment ((0, 0) for [CLS]/[SEP]); ``word_ids[i]`` numbers the
    words of each segment from 0 (None for [CLS]/[SEP]) so that all pieces of a
    word share an id, as ``transformers``' ``word_ids()``; ``sequence_ids[i]`` is
    0, 1 or None.
    """
    ids: list[int]
    tokens: list[str]
    token_type_ids: list[int]
    attention_mask: list[int]
    special_tokens_mask: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None] = field(default_factory=list)
    sequence_ids: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def word_starts(self) -> list[bool]:
        """True where a token begins a word (not ``##``, not [CLS]/[SEP]):
        the unit that whole-word masking picks."""
        prev = None
        out = []
        for w, s in zip(self.word_ids, self.sequence_ids):
            out.append(w is not None and (w, s) != prev)
            prev = (w, s) if w is not None else None
        return out


def _truncate_lengths(n1: int, n2: int | None, budget: int) -> tuple[int, int | None]:
    """BERT's "longest first" truncation, exactly as ``tokenizers`` computes it:
    if only the longer segment must shrink, shrink it to fit; otherwise give each
    half the budget (the odd token to the longer one, or to the second on a tie)."""
    if n2 is None:
        return min(n1, budget), None
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    short, long_ = (n2, n1) if swap else (n1, n2)
    if short > budget:
        long_ = short
    else:
        long_ = max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (long_, short) if swap else (short, long_)


# --------------------------------------------------------------------------
# 3. The tokenizer
# --------------------------------------------------------------------------

class BertTokenizer:
    """BERT's uncased WordPiece tokenizer over a vocabulary (a list of pieces, id = index).

    >>> tok = BertTokenizer.from_vocab(data.minilm_vocab_path())
    >>> tok.encode("Tokenization, un-affable!").tokens
    ['[CLS]', 'token', '##ization', ',', 'un', '-', 'af', '##fa', '##ble', '!', '[SEP]']
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        vocab: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if not isinstance(t, str) or not t:
                raise ValueError(f"vocabulary entry {i} is {t!r}; every line must be a non-empty piece.")
            vocab.setdefault(t, i)  # a repeated piece keeps its first id, as transformers does
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"the vocabulary lacks the special token(s) {missing}; BERT needs all of "
                f"{list(SPECIAL_TOKENS)}. Put them at the top of vocab.txt, or train with "
                "train_wordpiece(), which adds them.")
        self.vocab: dict[str, int] = vocab
        self.ids_to_tokens: list[str] = tokens
        self._special_ids = frozenset(vocab[t] for t in SPECIAL_TOKENS)
        self._cache: dict[str, tuple[tuple[int, int, int], ...]] = {}

    # -- vocabulary I/O -----------------------------------------------------
    @classmethod
    def from_vocab(cls, path: str | os.PathLike) -> "BertTokenizer":
        """Read a ``vocab.txt`` (one piece per line, line number = id)."""
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"no vocabulary file at {path}. Pass the path of a vocab.txt, e.g. "
                "bertmini.data.minilm_vocab_path(), or train one with load_or_train_vocab().")
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip("\r") for line in lines])

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``vocab.txt`` (atomically); a directory gets ``vocab.txt`` inside."""
        from bertmini import runtime
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.txt"
        return runtime.atomic_write_bytes(path, ("\n".join(self.ids_to_tokens) + "\n").encode("utf-8"))

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    def __repr__(self) -> str:
        return f"BertTokenizer(vocab_size={len(self)})"

    pad_token_id = property(lambda self: self.vocab[PAD])
    unk_token_id = property(lambda self: self.vocab[UNK])
    cls_token_id = property(lambda self: self.vocab[CLS])
    sep_token_id = property(lambda self: self.vocab[SEP])
    mask_token_id = property(lambda self: self.vocab[MASK])

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(self._special_ids)

    # -- WordPiece -------------------------------------------------------------
    def wordpiece(self, word: str) -> tuple[tuple[int, int, int], ...]:
        """Greedy longest-match-first split of one normalized word into
        ``(id, start, end)`` pieces (character positions in ``word``)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        vocab = self.vocab
        pieces = []
        n = len(word)
        if n > MAX_WORD_CHARS:
            pieces = None
        start = 0
        while pieces is not None and start < n:
            end = n
            while end > start:
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                if piece in vocab:
                    pieces.append((vocab[piece], start, end))
                    break
                end -= 1
            else:
                pieces = None   # some position cannot be covered: the whole word is [UNK]
            start = end
        result = ((vocab[UNK], 0, n),) if pieces is None else tuple(pieces)
        if len(self._cache) < 1_000_000:
            self._cache[word] = result
        return result

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text``, without [CLS]/[SEP]."""
        _check_text(text, "text")
        ids, _, _ = self._encode_segment(text)
        return [self.ids_to_tokens[i] for i in ids]

    def _encode_segment(self, text: str):
        """ids, offsets and word ids of one text; literal special tokens kept whole."""
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        word_ids: list[int] = []
        words: list[Word] = []
        pos = 0
        for m in _SPECIAL_IN_TEXT.finditer(text):
            words.extend(pre_tokenize(text[pos:m.start()], pos))
            words.append(Word(m.group(), m.start()))
            pos = m.end()
        words.extend(pre_tokenize(text[pos:], pos) if pos else pre_tokenize(text))
        for w_index, word in enumerate(words):
            if word.starts is None and word.text in SPECIAL_TOKENS and text.startswith(word.text, word.base):
                ids.append(self.vocab[word.text])
                offsets.append((word.base, word.base + len(word.text)))
                word_ids.append(w_index)
                continue
            for piece_id, i, j in self.wordpiece(word.text):
                ids.append(piece_id)
                offsets.append(word.span(i, j))
                word_ids.append(w_index)
        return ids, offsets, word_ids

    # -- encoding ----------------------------------------------------------------
    def encode(self, text: str, pair: str | None = None, max_length: int | None = None,
               truncation: bool = False) -> Encoding:
        """``[CLS] text [SEP]`` or ``[CLS] text [SEP] pair [SEP]`` with segment ids 0/1.

        With ``truncation=True`` the result has at most ``max_length`` tokens: pieces
        are removed from the end of the longer segment first (BERT's "longest
        first"). Without truncation, a text longer than ``max_length`` is an error.
        """
        _check_text(text, "text")
        if pair is not None:
            _check_text(pair, "pair")
        n_special = 2 if pair is None else 3
        if max_length is not None:
            if not isinstance(max_length, int) or isinstance(max_length, bool):
                raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
            if max_length < n_special:
                raise ValueError(
                    f"max_length={max_length} leaves no room: {'a pair' if pair is not None else 'a text'} "
                    f"needs {n_special} special tokens ([CLS], [SEP]{', [SEP]' if pair is not None else ''}). "
                    f"Use max_length >= {n_special} (BERT uses 128 or 512).")
        elif truncation:
            raise ValueError("truncation=True needs a max_length, e.g. encode(text, max_length=128, truncation=True).")

        a = self._encode_segment(text)
        b = self._encode_segment(pair) if pair is not None else None
        n1, n2 = len(a[0]), (len(b[0]) if b is not None else None)
        if max_length is not None:
            total = n1 + (n2 or 0) + n_special
            if total > max_length and not truncation:
                raise ValueError(
                    f"the input is {total} tokens, more than max_length={max_length}. "
                    "Pass truncation=True to cut it, or raise max_length.")
            n1, n2 = _truncate_lengths(n1, n2, max_length - n_special)

        cls_id, sep_id = self.cls_token_id, self.sep_token_id
        ids = [cls_id] + a[0][:n1] + [sep_id]
        offsets = [(0, 0)] + a[1][:n1] + [(0, 0)]
        word_ids = [None] + a[2][:n1] + [None]
        seq_ids = [None] + [0] * n1 + [None]
        types = [0] * (n1 + 2)
        if b is not None:
            ids += b[0][:n2] + [sep_id]
            offsets += b[1][:n2] + [(0, 0)]
            word_ids += b[2][:n2] + [None]
            seq_ids += [1] * n2 + [None]
            types += [1] * (n2 + 1)
        special = [1 if s is None else 0 for s in seq_ids]
        return Encoding(ids=ids, tokens=[self.ids_to_tokens[i] for i in ids], token_type_ids=types,
                        attention_mask=[1] * len(ids), special_tokens_mask=special,
                        offsets=offsets, word_ids=word_ids, sequence_ids=seq_ids)

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                     max_length: int | None = None, truncation: bool = False,
                     padding: bool | str = True, return_tensors: str | None = "pt") -> dict:
        """Encode many texts (and pairs) into a padded batch.

        ``padding=True`` (or ``"longest"``) pads to the longest encoding,
        ``"max_length"`` to ``max_length``, ``False`` requires equal lengths for
        tensors. Returns ``input_ids, token_type_ids, attention_mask,
        special_tokens_mask`` as ``torch.long`` tensors (lists if ``return_tensors=None``).
        Padding positions have attention 0, segment 0 and special-token mask 1.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError("encode_batch expects a list of strings; for one text use encode(text).")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs; they must match one to one.")
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding={padding!r}; use True/'longest', 'max_length' or False.")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length.")
        encs = [self.encode(t, None if pairs is None else pairs[i], max_length, truncation)
                for i, t in enumerate(texts)]
        if padding in (True, "longest"):
            width = max((len(e) for e in encs), default=0)
        elif padding == "max_length":
            width = max_length
        else:
            width = None
        batch = {"input_ids": [], "token_type_ids": [], "attention_mask": [], "special_tokens_mask": []}
        pad_with = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0,
                    "special_tokens_mask": 1}
        for e in encs:
            rows = {"input_ids": e.ids, "token_type_ids": e.token_type_ids,
                    "attention_mask": e.attention_mask, "special_tokens_mask": e.special_tokens_mask}
            for key, row in rows.items():
                extra = 0 if width is None else width - len(row)
                batch[key].append(row + [pad_with[key]] * extra)
        if return_tensors is None:
            return batch
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r}; only 'pt' (torch) or None are supported.")
        import torch
        if width is None and len({len(e) for e in encs}) > 1:
            raise ValueError("encodings have different lengths; use padding=True to make a tensor.")
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.ids_to_tokens[int(i)] for i in ids]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Pieces back to text, as ``tokenizers``' WordPiece decoder: ``##`` pieces
        join the previous one, others get a space, except . , ! ? which attach.
        Lowercasing and stripped accents are not undone."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.ids_to_tokens):
                raise ValueError(f"id {i} is outside the vocabulary (0..{len(self) - 1}).")
            if skip_special_tokens and i in self._special_ids:
                continue
            tok = self.ids_to_tokens[i]
            if out and tok.startswith(CONTINUATION):
                out.append(tok[len(CONTINUATION):])
            elif out:
                out.append(tok if tok in (".", "?", "!", ",") else " " + tok)
            else:
                out.append(tok)
        return "".join(out)


# --------------------------------------------------------------------------
# 4. The WordPiece trainer
# --------------------------------------------------------------------------

def count_words(texts: Iterable[str], progress: bool = False) -> Counter:
    """How often each pre-tokenized word occurs in ``texts``."""
    counts: Counter = Counter()
    iterator = texts
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(texts, desc="counting words", unit="text")
    for text in iterator:
        _check_text(text, "every text")
        counts.update(w.text for w in pre_tokenize(text))
    return counts


def _likelihood(c_ab: int, c_a: int, c_b: int, n: int) -> float:
    return c_ab / (c_a * c_b)


def _gain(c_ab: int, c_a: int, c_b: int, n: int) -> float:
    return c_ab * math.log(c_ab * n / (c_a * c_b))


def _count(c_ab: int, c_a: int, c_b: int, n: int) -> float:
    return float(c_ab)


# How a merge candidate is scored, from count(ab), count(a), count(b) and the
# number n of symbols in the corpus before training.
SCORES = {
    "likelihood": _likelihood,  # count(ab) / (count(a) count(b)): the textbook WordPiece score
    "gain": _gain,              # count(ab) * log(count(ab) n / (count(a) count(b))): log-likelihood gain
    "count": _count,            # count(ab): BPE's rule, which tokenizers' WordPieceTrainer uses
}


@dataclass
class Merge:
    """One training step: ``left + right -> token``, with the score that won."""
    left: str
    right: str
    token: str
    count: int
    score: float


class WordPieceTrainer:
    """Learn WordPiece pieces from word counts, one merge at a time.

    Every word starts as characters, the first plain and the rest ``##``-marked
    (``hug`` -> ``h ##u ##g``); the initial alphabet is all of them. Each step
    merges the adjacent pair with the highest likelihood score
    ``count(ab) / (count(a) * count(b))`` (ties: higher ``count(ab)``, then the
    earlier pair), until ``vocab_size`` pieces exist. Pairs seen fewer than
    ``min_frequency`` times are never merged.

    Speed comes from never recounting: a merge only touches the words that
    contain the pair, the pair counts change by the difference, and a heap holds
    each pair's current score (an entry whose score is out of date is skipped
    when it reaches the top). Because merging ``a`` and ``b`` lowers
    ``count(a)`` and ``count(b)``, it *raises* the score of every other pair that
    uses ``a`` or ``b``, so those pairs are pushed again too.
    """

    def __init__(self, vocab_size: int = 8000, min_frequency: int = 2,
                 special_tokens: Sequence[str] = SPECIAL_TOKENS, limit_alphabet: int | None = None,
                 score: str = "gain"):
        if score not in SCORES:
            raise ValueError(f"score={score!r}; choose one of {list(SCORES)}.")
        self.score = score
        if not isinstance(vocab_size, int) or vocab_size <= len(special_tokens):
            raise ValueError(f"vocab_size={vocab_size!r} must be an int larger than the "
                             f"{len(special_tokens)} special tokens.")
        self.vocab_size = vocab_size
        self.min_frequency = max(1, int(min_frequency))
        self.special_tokens = list(special_tokens)
        self.limit_alphabet = limit_alphabet
        self.merges: list[Merge] = []
        self.alphabet: list[str] = []
        self.seconds = 0.0

    def train(self, word_counts: dict[str, int], progress: bool = False) -> list[str]:
        """The vocabulary (special tokens, alphabet, then merged pieces in merge order)."""
        t0 = time.perf_counter()
        items = sorted((w, c) for w, c in word_counts.items() if 0 < len(w) <= MAX_WORD_CHARS and c > 0)
        if not items:
            raise ValueError("no words to train on: the texts are empty or only whitespace.")

        # Alphabet: every first character and every ##-continuation character.
        char_counts: Counter = Counter()
        for w, c in items:
            char_counts[w[0]] += c
            for ch in w[1:]:
                char_counts[CONTINUATION + ch] += c
        alphabet = sorted(char_counts, key=lambda s: (-char_counts[s], s))
        if self.limit_alphabet is not None:
            alphabet = alphabet[:self.limit_alphabet]
        alphabet = sorted(alphabet)
        self.alphabet = alphabet
        symbols: list[str] = list(self.special_tokens) + [s for s in alphabet if s not in self.special_tokens]
        sym_id = {s: i for i, s in enumerate(symbols)}

        # Words as lists of symbol ids (a word with a character outside the
        # limited alphabet is dropped: it would become [UNK] anyway).
        words: list[list[int]] = []
        freqs: list[int] = []
        for w, c in items:
            pieces = [w[0]] + [CONTINUATION + ch for ch in w[1:]]
            if all(p in sym_id for p in pieces):
                words.append([sym_id[p] for p in pieces])
                freqs.append(c)

        unit: dict[int, int] = Counter()            # count(a)
        pairs: dict[tuple[int, int], int] = Counter()  # count(ab)
        where: dict[tuple[int, int], set[int]] = {}   # words containing ab
        partners: dict[int, set[tuple[int, int]]] = {}  # pairs that use a
        for i, (word, f) in enumerate(zip(words, freqs)):
            for s in word:
                unit[s] += f
            for p in zip(word, word[1:]):
                pairs[p] += f
                where.setdefault(p, set()).add(i)
        for p in pairs:
            partners.setdefault(p[0], set()).add(p)
            partners.setdefault(p[1], set()).add(p)

        min_freq = self.min_frequency
        n0 = sum(unit.values())
        score = SCORES[self.score]
        heap = [(-score(c, unit[p[0]], unit[p[1]], n0), -c, p) for p, c in pairs.items() if c >= min_freq]
        heapq.heapify(heap)

        bar = None
        target = self.vocab_size
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=max(0, target - len(symbols)), desc="WordPiece merges", unit="merge")
        self.merges = []
        while len(symbols) < target and heap:
            neg_score, neg_count, p = heapq.heappop(heap)
            c = pairs.get(p, 0)
            if c != -neg_count or c < min_freq or -neg_score != score(c, unit[p[0]], unit[p[1]], n0):
                continue  # out of date: a fresher entry for this pair is in the heap
            a, b = p
            right = symbols[b]
            new = symbols[a] + (right[len(CONTINUATION):] if right.startswith(CONTINUATION) else right)
            if new in sym_id:   # the same string reached by another route: reuse its id
                z = sym_id[new]
            else:
                z = len(symbols)
                symbols.append(new)
                sym_id[new] = z
                self.merges.append(Merge(symbols[a], right, new, c, -neg_score))
                if bar is not None:
                    bar.update(1)

            # Re-spell every word that contains the pair; record count changes.
            pair_delta: Counter = Counter()
            unit_delta: Counter = Counter()
            for i in sorted(where.get(p, ())):
                old = words[i]
                f = freqs[i]
                merged = []
                k = 0
                while k < len(old):
                    if k + 1 < len(old) and old[k] == a and old[k + 1] == b:
                        merged.append(z)
                        k += 2
                    else:
                        merged.append(old[k])
                        k += 1
                for s in old:
                    unit_delta[s] -= f
                for s in merged:
                    unit_delta[s] += f
                old_pairs = list(zip(old, old[1:]))
                new_pairs = list(zip(merged, merged[1:]))
                for q in old_pairs:
                    pair_delta[q] -= f
                for q in new_pairs:
                    pair_delta[q] += f
                for q in set(old_pairs) - set(new_pairs):
                    where[q].discard(i)
                for q in set(new_pairs) - set(old_pairs):
                    where.setdefault(q, set()).add(i)
                words[i] = merged

            for s, d in unit_delta.items():
                if d:
                    unit[s] += d
            touched = {q for q, d in pair_delta.items() if d}
            for q in touched:
                pairs[q] += pair_delta[q]
                if pairs[q] <= 0:
                    del pairs[q]
                    where.pop(q, None)
                    partners[q[0]].discard(q)
                    partners[q[1]].discard(q)
                else:
                    partners.setdefault(q[0], set()).add(q)
                    partners.setdefault(q[1], set()).add(q)
            # Pairs sharing a unit whose count fell now score higher: push them again.
            for s, d in unit_delta.items():
                if d < 0 and unit[s] > 0 and self.score != "count":
                    touched |= partners.get(s, set())
            for q in touched:
                cq = pairs.get(q, 0)
                if cq >= min_freq:
                    heapq.heappush(heap, (-score(cq, unit[q[0]], unit[q[1]], n0), -cq, q))
            if len(heap) > 4 * len(pairs) + 100_000:   # drop stale entries now and then
                heap = [(-score(cq, unit[q[0]], unit[q[1]], n0), -cq, q) for q, cq in pairs.items() if cq >= min_freq]
                heapq.heapify(heap)
        if bar is not None:
            bar.close()
        self.seconds = time.perf_counter() - t0
        return symbols


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                    special_tokens: Sequence[str] = SPECIAL_TOKENS, limit_alphabet: int | None = None,
                    score: str = "gain", progress: bool = False) -> list[str]:
    """Train a WordPiece vocabulary on ``texts``; returns the list of pieces
    (id = position: special tokens, alphabet, merges), ready for
    ``BertTokenizer(pieces)``. Use :class:`WordPieceTrainer` to see the merges."""
    if isinstance(texts, str):
        raise TypeError("train_wordpiece expects a list of texts, not one string; wrap it: [text].")
    counts = count_words(texts, progress=progress)
    trainer = WordPieceTrainer(vocab_size, min_frequency, special_tokens, limit_alphabet, score)
    return trainer.train(counts, progress=progress)


def load_or_train_vocab(vocab_size: int = 8000, progress: bool = True) -> BertTokenizer:
    """The book's own vocabulary: WordPiece trained on the training split of the
    Wikipedia corpus, cached at ``<cache>/vocab/wiki-wordpiece-<size>.txt``.
    Deterministic, so every chapter gets the same pieces; the first call trains
    it (seconds), later calls read the file."""
    from bertmini import data, runtime
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


# --------------------------------------------------------------------------
# 5. The fast path: the same tokenizer in Rust
# --------------------------------------------------------------------------

def to_fast(tokenizer: BertTokenizer):
    """The same tokenizer as a ``tokenizers.Tokenizer`` (Rust, ~10-50x faster)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    fast = Tokenizer(models.WordPiece(dict(tokenizer.vocab), unk_token=UNK,
                                      max_input_chars_per_word=MAX_WORD_CHARS))
    fast.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                 strip_accents=None, lowercase=True)
    fast.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    fast.decoder = decoders.WordPiece(prefix=CONTINUATION)
    fast.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    fast.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0", pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, tokenizer.cls_token_id), (SEP, tokenizer.sep_token_id)])
    return fast


def to_hf_fast(tokenizer: BertTokenizer):
    """The same tokenizer as a ``transformers.BertTokenizerFast``, built in memory."""
    from transformers import BertTokenizerFast
    return BertTokenizerFast(vocab=dict(tokenizer.vocab), do_lower_case=True)
