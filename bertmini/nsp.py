"""From Wikipedia articles to next-sentence-prediction pairs, as tensors (chapter 4).

The data of the BERT paper (section 3.1 and appendix A.2), at book scale::

    article -> sentences -> token ids (once)  -> [CLS] A [SEP] B [SEP] pairs, up to max_length
            -> B is the real continuation half the time (IsNext = 0), else taken
               from another article (NotNext = 1)
            -> fixed-size tensors, padded once (masking happens per batch:
               :class:`bertmini.masking.MaskedBatches`)

:func:`split_sentences`, :func:`tokenize_articles`, :func:`make_nsp_pairs` and
:func:`pretraining_data` build the data; :class:`PretrainingData` holds it as tensors.

Not handled: sentence splitting beyond ``. ! ?`` followed by a capital (abbreviations
such as "U.S. Army" may split wrongly; a split in the wrong place only makes a
slightly odd pair), documents longer than the model (pairs are cut at
``max_length``), Google's ``short_seq_prob`` (random shorter pairs) and
``dupe_factor`` (static copies; masking here is dynamic instead).
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .padding import length_mask, pad_rows

IS_NEXT, NOT_NEXT = 0, 1  # transformers' next_sentence_label convention
NEGATIVES = ("other_article", "same_article")

# ----------------------------------------------------------------------------- sentences

# A sentence ends at . ! or ? (maybe followed by a quote or bracket), then space,
# then something that can start a sentence. A single capital letter before the
# full stop ("Arthur C. Clarke") or a common abbreviation is not an end.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "no", "co", "inc", "ltd", "mt", "ft",
                  "gen", "col", "est", "b", "d", "lt", "sgt", "prof", "rev", "gov", "sen", "rep", "fr", "e.g", "i.e", "c",
                  "ca", "approx", "u.s", "u.k", "jan", "feb", "mar", "apr", "aug", "sept", "sep", "oct",
                  "nov", "dec", "fig", "vol", "op", "ed"}


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences with a rule, not a model (see the module docstring).

    >>> split_sentences("Arthur C. Clarke wrote it. It was filmed in 1968! Was it good?")
    ['Arthur C. Clarke wrote it.', 'It was filmed in 1968!', 'Was it good?']
    """
    if not isinstance(text, str):
        raise TypeError(f"split_sentences takes a string, got {type(text).__name__}")
    sentences: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        candidate = text[start:m.start()].strip()
        last_word = candidate.rsplit(None, 1)[-1].rstrip(".!?\"')]").lower() if candidate else ""
        if text[m.start() - 1] == "." and (last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())):
            continue  # "Dr. Who", "C. Clarke": not the end of a sentence
        if candidate:
            sentences.append(text[start:m.end()].strip())
            start = m.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def tokenize_articles(texts: Sequence[str], tokenizer) -> list[list[list[int]]]:
    """Each article as a list of sentences, each sentence as WordPiece ids (no specials).

    Tokenizes once, with the fast (Rust) twin of ``tokenizer`` (a bertmini
    ``BertTokenizer``): chapter 1 showed both give the same ids.
    """
    from .tokenization import BertTokenizer, to_fast

    if not isinstance(tokenizer, BertTokenizer):
        raise TypeError(f"tokenize_articles needs a bertmini BertTokenizer, got {type(tokenizer).__name__}; "
                        "load one with load_or_train_vocab() or BertTokenizer.from_vocab(path)")
    fast = to_fast(tokenizer)
    sentences = [split_sentences(t) for t in texts]
    flat = [s for doc in sentences for s in doc]
    encoded = fast.encode_batch(flat, add_special_tokens=False) if flat else []
    docs, i = [], 0
    for doc in sentences:
        docs.append([e.ids for e in encoded[i:i + len(doc)] if e.ids])
        i += len(doc)
    return docs


# ----------------------------------------------------------------------------- NSP pairs


def _take(sentences: Sequence[list[int]], start: int, budget: int) -> tuple[list[int], int]:
    """Whole sentences from ``start`` while they fit in ``budget`` (at least one); the ids and the next index."""
    ids: list[int] = []
    j = start
    while j < len(sentences) and (not ids or len(ids) + len(sentences[j]) <= budget):
        ids += sentences[j]
        j += 1
    return ids, j


def make_nsp_pairs(docs: Sequence[Sequence[list[int]]], max_length: int = 64, *, seed: int = 0,
                   negatives: str = "other_article", nsp_probability: float = 0.5
                   ) -> list[tuple[list[int], list[int], int]]:
    """Walk through every article and cut it into ``(A, B, label)`` pairs of token ids.

    A is one or more whole sentences, filling up to half of the ``max_length - 3``
    tokens left after ``[CLS] A [SEP] B [SEP]`` (always leaving at least one sentence
    for B); B is the sentences that really follow A, filling the rest. Then, with
    probability ``nsp_probability``, the pair is made a negative (``NOT_NEXT``):

    * ``negatives="other_article"`` (BERT): B is replaced by sentences from a random
      place in a random other article; the real B is not used up, the next pair
      starts with it (as Google's ``create_pretraining_data.py`` does);
    * ``negatives="same_article"``: A and B swap places, so B comes first. Both halves
      are from the same article, so the topic no longer gives the answer away (this
      is ALBERT's sentence-order prediction).

    Otherwise the pair is ``IS_NEXT``. A last sentence with nothing after it, and an
    article of one sentence, make no pair. Pairs longer than the budget lose tokens
    from the end of the longer segment (Google's ``truncate_seq_pair``).
    Deterministic for a given ``seed``.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives={negatives!r}; use one of {NEGATIVES}")
    if not isinstance(max_length, int) or max_length < 8:
        raise ValueError(f"max_length={max_length!r} is too short for a sentence pair; use 64 or more")
    if not 0.0 <= nsp_probability <= 1.0:
        raise ValueError(f"nsp_probability={nsp_probability!r} must be in [0, 1] (BERT: 0.5)")
    budget = max_length - 3
    rng = random.Random(seed)
    usable = [i for i, d in enumerate(docs) if d]
    if negatives == "other_article" and len(usable) < 2:
        raise ValueError("random-article negatives need at least two non-empty articles")
    pairs: list[tuple[list[int], list[int], int]] = []
    for di, doc in enumerate(docs):
        i = 0
        while i < len(doc) - 1:  # at least two sentences left: an A and a B
            a, j = _take(doc[:-1], i, budget // 2)  # doc[:-1]: keep one sentence for B
            b, k = _take(doc, j, budget - len(a))
            label = IS_NEXT
            if rng.random() < nsp_probability:
                label = NOT_NEXT
                if negatives == "other_article":
                    other = di
                    while other == di:
                        other = rng.choice(usable)
                    b, _ = _take(docs[other], rng.randrange(len(docs[other])), budget - len(a))
                    k = j  # the real continuation starts the next pair
                else:
                    a, b = b, a
            a, b = _truncate_pair(list(a), list(b), budget)
            pairs.append((a, b, label))
            i = k
    if not pairs and docs:
        task = "sentence-order prediction" if negatives == "same_article" else "next-sentence prediction"
        raise ValueError(f"no sentence pairs: {task} needs articles of at least two sentences (an A and the B "
                         f"that follows it), and each of the {len(docs)} articles has one or none. Pass longer "
                         f"articles, or check the sentence split (bertmini.nsp.split_sentences)")
    return pairs


def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


# ----------------------------------------------------------------------------- tensors


@dataclass
class PretrainingData:
    """NSP pairs as padded ``(n, max_length)`` tensors, ready to batch.

    ``special_tokens_mask`` is 1 at ``[CLS]``, ``[SEP]`` and padding (never masked).
    """

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    special_tokens_mask: torch.Tensor
    next_sentence_label: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``index``, cut to the longest of them (no columns of pure padding)."""
        mask = self.attention_mask[index]
        width = int(mask.sum(1).max())
        return {"input_ids": self.input_ids[index, :width], "token_type_ids": self.token_type_ids[index, :width],
                "attention_mask": mask[:, :width], "special_tokens_mask": self.special_tokens_mask[index, :width],
                "next_sentence_label": self.next_sentence_label[index]}

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[list[int], list[int], int]], tokenizer,
                   max_length: int) -> "PretrainingData":
        n = len(pairs)
        if n == 0:
            raise ValueError("no sentence pairs: are the articles empty?")
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        rows = [[cls_id, *a, sep_id, *b, sep_id] for a, b, _ in pairs]
        ids = pad_rows(rows, tokenizer.pad_token_id, length=max_length)
        attn = length_mask([len(r) for r in rows], max_length)
        types = torch.zeros((n, max_length), dtype=torch.long)
        special = torch.ones((n, max_length), dtype=torch.long)
        for r, (a, b, _) in enumerate(pairs):
            n_a = len(a) + 2  # [CLS] A [SEP]
            types[r, n_a:len(rows[r])] = 1
            special[r, 1:n_a - 1] = 0
            special[r, n_a:len(rows[r]) - 1] = 0
        labels = torch.tensor([p[2] for p in pairs], dtype=torch.long)
        return cls(ids, types, attn, special, labels)


def pretraining_data(split: str, tokenizer, max_length: int = 64, *,
                     copies: int = 1, seed: int = 0,
                     negatives: str = "other_article") -> PretrainingData:
    """The NSP pairs of one split of ``bertmini.data.wiki_articles`` as tensors.

    ``copies > 1`` cuts the articles into pairs that many times with different
    random choices (different negatives, different IsNext/NotNext coin flips),
    as Google's ``dupe_factor``; masking stays dynamic either way.
    """
    from . import data

    texts = [a.text for a in data.wiki_articles(split)]
    docs = tokenize_articles(texts, tokenizer)  # sentences of ids, per article
    pairs = [pair for c in range(copies)
             for pair in make_nsp_pairs(docs, max_length, seed=seed + 1000 * c,
                                        negatives=negatives)]
    return PretrainingData.from_pairs(pairs, tokenizer, max_length)
