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

``WordPieceTrainer`` learns a vocabulary: start from characters, score every
adjacent pair of pieces, merge the best pair, repeat (``score="gain"`` by
default; ``SCORES`` lists the choices, the textbook likelihood ratio among
them). ``train_wordpiece`` runs the same algorithm through its fast twin in
``bertmini/fast/wordpiece_trainer.py``. The book's cached vocabulary is
``bertmini.vocab.load_or_train_vocab``.

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

import math
import operator
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

    >>> tok = BertTokenizer.from_vocab(bertmini.data.minilm_vocab_path())
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
                "bertmini.data.minilm_vocab_path(), or train one with train_wordpiece().")
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
                piece = word[start:end]
                if start > 0:
                    piece = CONTINUATION + piece
                if piece in vocab:
                    pieces.append((vocab[piece], start, end))
                    break
                end -= 1
            else:   # some position cannot be covered: the whole word is [UNK]
                pieces = None
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
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}; only 'pt' (torch) or None are supported.")
        rows = {"input_ids": [e.ids for e in encs], "token_type_ids": [e.token_type_ids for e in encs],
                "attention_mask": [e.attention_mask for e in encs],
                "special_tokens_mask": [e.special_tokens_mask for e in encs]}
        if width is None:
            if return_tensors is None:
                return rows
            if len({len(e) for e in encs}) > 1:
                raise ValueError("encodings have different lengths; use padding=True to make a tensor.")
            width = len(encs[0]) if encs else 0
        from .padding import pad_rows  # torch is imported only when tensors are asked for

        pad_with = {"input_ids": self.pad_token_id, "token_type_ids": 0, "attention_mask": 0,
                    "special_tokens_mask": 1}
        batch = {k: pad_rows(v, pad_with[k], length=width) for k, v in rows.items()}
        return batch if return_tensors == "pt" else {k: v.tolist() for k, v in batch.items()}

    def _token_id(self, i) -> int:
        """``i`` as an index into the vocabulary. Floats are refused (they are scores, not
        ids), and so are negative ids, which would silently count from the end of the list."""
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"token ids must be integers, got {i!r} ({type(i).__name__}); pass ids, "
                            "e.g. logits.argmax(-1).tolist(), not scores or probabilities.") from None
        if not 0 <= i < len(self.ids_to_tokens):
            raise ValueError(f"id {i} is outside the vocabulary (0..{len(self) - 1}).")
        return i

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return [self.ids_to_tokens[self._token_id(i)] for i in ids]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Pieces back to text, as ``tokenizers``' WordPiece decoder: ``##`` pieces
        join the previous one, others get a space, except . , ! ? which attach.
        Lowercasing and stripped accents are not undone."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        out = []
        for i in ids:
            i = self._token_id(i)
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


def spell(word: str) -> list[str]:
    """A word as the trainer starts it: ``"hug"`` -> ``["h", "##u", "##g"]``."""
    return [word[0]] + [CONTINUATION + ch for ch in word[1:]]


def merge_pair(pieces: list[str], left: str, right: str, token: str) -> list[str]:
    """``pieces`` with each ``left, right`` (read from the left) replaced by ``token``."""
    if left not in pieces:
        return pieces   # most words: nothing to merge
    out = []
    i = 0
    while i < len(pieces):
        if i + 1 < len(pieces) and pieces[i] == left and pieces[i + 1] == right:
            out.append(token)
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def count_pairs(words: list[tuple[list[str], int]]) -> tuple[Counter, Counter]:
    """How often each piece, and each adjacent pair of pieces, occurs in ``words``
    (a list of ``(pieces, how often the word occurs)``)."""
    units: Counter = Counter()
    pairs: Counter = Counter()
    for pieces, count in words:
        for piece in pieces:
            units[piece] += count
        for pair in zip(pieces, pieces[1:]):
            pairs[pair] += count
    return units, pairs


class WordPieceTrainer:
    """Learn WordPiece pieces from word counts, one merge at a time.

    Every word starts as characters, the first plain and the rest ``##``-marked
    (``hug`` -> ``h ##u ##g``); the alphabet is all of them. Each step counts
    every adjacent pair of pieces in the corpus, scores it with ``SCORES[score]``
    and merges the best pair in every word, until ``vocab_size`` pieces exist.
    The default, ``score="gain"``, is ``count(ab) * log(count(ab) n / (count(a)
    count(b)))``; ``"likelihood"`` is the textbook ratio ``count(ab) / (count(a)
    count(b))`` and ``"count"`` is BPE's ``count(ab)``. Ties go to the higher
    ``count(ab)``, then to the pair whose pieces entered the vocabulary first.
    Pairs seen fewer than ``min_frequency`` times are never merged.

    This is the algorithm as written, recounting the whole corpus for every
    merge: fine for a few hundred merges on a few hundred articles. For the
    book's 8,000 pieces, ``train_wordpiece`` uses the fast twin
    ``bertmini.fast.wordpiece_trainer.FastWordPieceTrainer``, which updates the
    counts instead and is tested to learn the same pieces in the same order.
    """

    def __init__(self, vocab_size: int = 8000, min_frequency: int = 2,
                 special_tokens: Sequence[str] = SPECIAL_TOKENS, limit_alphabet: int | None = None,
                 score: str = "gain"):
        if score not in SCORES:
            raise ValueError(f"score={score!r}; choose one of {list(SCORES)}.")
        if not isinstance(vocab_size, int) or vocab_size <= len(special_tokens):
            raise ValueError(f"vocab_size={vocab_size!r} must be an int larger than the "
                             f"{len(special_tokens)} special tokens.")
        self.score = score
        self.vocab_size = vocab_size
        self.min_frequency = max(1, int(min_frequency))
        self.special_tokens = list(special_tokens)
        self.limit_alphabet = limit_alphabet
        self.merges: list[Merge] = []
        self.alphabet: list[str] = []
        self.seconds = 0.0

    def train(self, word_counts: dict[str, int], progress: bool = False) -> list[str]:
        """The vocabulary: special tokens, alphabet, then merged pieces in merge order.
        Also sets ``alphabet``, ``merges`` (one ``Merge`` per new piece) and ``seconds``."""
        t0 = time.perf_counter()
        words = self.initial_words(word_counts)
        vocab = list(self.special_tokens) + [s for s in self.alphabet if s not in self.special_tokens]
        self.merges = []
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=max(0, self.vocab_size - len(vocab)), desc="WordPiece merges", unit="merge")
        self.learn_merges(words, vocab, bar)
        if bar is not None:
            bar.close()
        self.seconds = time.perf_counter() - t0
        return vocab

    def initial_words(self, word_counts: dict[str, int]) -> list[tuple[list[str], int]]:
        """Each word spelled in characters, with its count; sets ``alphabet``.

        Words longer than ``MAX_WORD_CHARS`` are left out (the encoder makes them
        [UNK] anyway); with ``limit_alphabet`` only the most frequent characters
        are kept, and so are only the words spelled entirely with them."""
        items = sorted((w, c) for w, c in word_counts.items() if 0 < len(w) <= MAX_WORD_CHARS and c > 0)
        if not items:
            raise ValueError("no words to train on: the texts are empty or only whitespace.")
        char_counts: Counter = Counter()
        for word, count in items:
            for piece in spell(word):
                char_counts[piece] += count
        alphabet = sorted(char_counts, key=lambda s: (-char_counts[s], s))
        if self.limit_alphabet is not None:
            alphabet = alphabet[:self.limit_alphabet]
        self.alphabet = sorted(alphabet)
        known = set(self.alphabet)
        words = [(spell(word), count) for word, count in items]
        return [(pieces, count) for pieces, count in words if known.issuperset(pieces)]

    def learn_merges(self, words: list[tuple[list[str], int]], vocab: list[str],
                     bar=None) -> None:
        """Merge the best pair and append the new piece to ``vocab``, until it
        is full."""
        # ties go to earlier pieces
        rank = {piece: i for i, piece in enumerate(vocab)}
        # the number of symbols before training
        n = sum(len(pieces) * count for pieces, count in words)
        while len(vocab) < self.vocab_size:
            best = self.best_pair(words, rank, n)
            if best is None:
                break   # no pair occurs min_frequency times any more
            (left, right), count, score = best
            token = left + right.removeprefix(CONTINUATION)
            words = [(merge_pair(pieces, left, right, token), c)
                     for pieces, c in words]
            if token in rank:   # reached before by another pair: nothing new
                continue
            rank[token] = len(vocab)
            vocab.append(token)
            self.merges.append(Merge(left, right, token, count, score))
            if bar is not None:
                bar.update(1)

    def best_pair(self, words: list[tuple[list[str], int]], rank: dict[str, int],
                  n: int) -> tuple[tuple[str, str], int, float] | None:
        """The pair to merge next, its count and its score (None if none is
        frequent enough)."""
        units, pairs = count_pairs(words)
        score = SCORES[self.score]

        def key(pair):   # highest score, then highest count, then earliest pieces
            a, b = pair
            return (score(pairs[pair], units[a], units[b], n), pairs[pair],
                    -rank[a], -rank[b])

        frequent = [pair for pair, count in pairs.items()
                    if count >= self.min_frequency]
        if not frequent:
            return None
        best = max(frequent, key=key)
        return best, pairs[best], key(best)[0]


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
                    special_tokens: Sequence[str] = SPECIAL_TOKENS, limit_alphabet: int | None = None,
                    score: str = "gain", progress: bool = False) -> list[str]:
    """Train a WordPiece vocabulary on ``texts``; returns the list of pieces
    (id = position: special tokens, alphabet, merges), ready for
    ``BertTokenizer(pieces)``.

    This is where the fast path is chosen: it trains with ``FastWordPieceTrainer``
    (``bertmini/fast/wordpiece_trainer.py``), which learns exactly what
    :class:`WordPieceTrainer` learns, in seconds rather than hours for 8,000
    pieces. Use either trainer directly to see the merges."""
    from .fast.wordpiece_trainer import FastWordPieceTrainer
    if isinstance(texts, str):
        raise TypeError("train_wordpiece expects a list of texts, not one string; wrap it: [text].")
    counts = count_words(texts, progress=progress)
    trainer = FastWordPieceTrainer(vocab_size, min_frequency, special_tokens, limit_alphabet, score)
    return trainer.train(counts, progress=progress)


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
