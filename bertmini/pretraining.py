"""From Wikipedia articles to a pretrained BERT: sentences, NSP pairs, masked batches, the run.

The pipeline of the BERT paper (section 3.1 and appendix A.2), at book scale::

    article -> sentences -> token ids (once)  -> [CLS] A [SEP] B [SEP] pairs, up to max_length
            -> B is the real continuation half the time (IsNext = 0), else taken
               from another article (NotNext = 1)
            -> fixed-size tensors, padded once
            -> every batch masked afresh (dynamic masking, chapter 2)
            -> BertForPreTraining: MLM loss + NSP loss

* :func:`split_sentences`, :func:`tokenize_articles`, :func:`make_nsp_pairs`,
  :func:`pretraining_data` build the data; :class:`PretrainingData` holds it as tensors.
* :class:`MaskedBatches` is the training stream :func:`bertmini.train.train` reads.
* :func:`evaluate` (masked-token accuracy, MLM loss, NSP accuracy on a fixed mask),
  :func:`unigram_baseline`, :func:`topic_baseline` (NSP by word overlap alone),
  :func:`fill_in_the_blank`, :func:`nearest_tokens` look at what the model learned.
* :func:`pretrain` runs a recipe; :func:`load_or_pretrain` returns the book's
  pretrained model from the cache, training it the first time.

Not handled: sentence splitting beyond ``. ! ?`` followed by a capital (abbreviations
such as "U.S. Army" may split wrongly; a split in the wrong place only makes a
slightly odd pair), documents longer than the model (pairs are cut at
``max_length``), Google's ``short_seq_prob`` (random shorter pairs) and
``dupe_factor`` (static copies; masking here is dynamic instead).
"""
from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import runtime
from .config import BertConfig
from .heads import IGNORE_INDEX, BertForPreTraining
from .masking import mask_tokens

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
        ids = torch.full((n, max_length), tokenizer.pad_token_id, dtype=torch.long)
        types = torch.zeros((n, max_length), dtype=torch.long)
        attn = torch.zeros((n, max_length), dtype=torch.long)
        special = torch.ones((n, max_length), dtype=torch.long)
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        for r, (a, b, _) in enumerate(pairs):
            row = [cls_id, *a, sep_id, *b, sep_id]
            n_a = len(a) + 2
            ids[r, :len(row)] = torch.tensor(row)
            types[r, n_a:len(row)] = 1
            attn[r, :len(row)] = 1
            special[r, 1:n_a - 1] = 0
            special[r, n_a:len(row) - 1] = 0
        labels = torch.tensor([p[2] for p in pairs], dtype=torch.long)
        return cls(ids, types, attn, special, labels)


def pretraining_data(split: str, tokenizer, max_length: int = 64, *, copies: int = 1, seed: int = 0,
                     negatives: str = "other_article") -> PretrainingData:
    """The NSP pairs of one split of ``bertmini.data.wiki_articles`` as tensors.

    ``copies > 1`` cuts the articles into pairs that many times with different
    random choices (different negatives, different IsNext/NotNext coin flips), as
    Google's ``dupe_factor``; masking stays dynamic either way.
    """
    from . import data

    docs = tokenize_articles([a.text for a in data.wiki_articles(split)], tokenizer)
    pairs = [p for c in range(copies)
             for p in make_nsp_pairs(docs, max_length, seed=seed + 1000 * c, negatives=negatives)]
    return PretrainingData.from_pairs(pairs, tokenizer, max_length)


class MaskedBatches:
    """The training stream: shuffled batches of :class:`PretrainingData`, masked afresh
    each time (dynamic masking), as dicts for ``model(**batch)``.

    Re-iterable: every ``iter()`` is a new epoch. Shuffling and masking draw from the
    global torch random state, which :func:`bertmini.train.train` owns and saves, so
    a resumed run sees exactly the batches it would have. ``use_nsp=False`` leaves
    ``next_sentence_label`` out of the batches (MLM alone).
    """

    def __init__(self, data: PretrainingData, tokenizer, batch_size: int, *, mlm_probability: float = 0.15,
                 use_nsp: bool = True):
        if batch_size < 1 or batch_size > len(data):
            raise ValueError(f"batch_size={batch_size} must be between 1 and the {len(data)} examples")
        self.data, self.batch_size, self.use_nsp = data, batch_size, use_nsp
        self.mlm_probability = mlm_probability
        self.mask_token_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        special = set(tokenizer.all_special_ids)
        self.random_token_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special])

    def __len__(self) -> int:
        return len(self.data) // self.batch_size  # the last partial batch is dropped

    def mask(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        batch = dict(batch)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], mask_token_id=self.mask_token_id, vocab_size=self.vocab_size,
            special_tokens_mask=batch.pop("special_tokens_mask"), mlm_probability=self.mlm_probability,
            generator=generator, random_token_ids=self.random_token_ids)
        if not self.use_nsp:
            batch.pop("next_sentence_label")
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(len(self.data))
        for k in range(len(self)):
            yield self.mask(self.data.batch(order[k * self.batch_size:(k + 1) * self.batch_size]))


# ----------------------------------------------------------------------------- evaluation


def fixed_masked_batches(data: PretrainingData, tokenizer, batch_size: int = 256, seed: int = 1234,
                         mlm_probability: float = 0.15) -> list[dict[str, torch.Tensor]]:
    """Held-out batches masked once with a fixed seed, so every evaluation scores the same blanks."""
    stream = MaskedBatches(data, tokenizer, min(batch_size, len(data)), mlm_probability=mlm_probability)
    g = torch.Generator().manual_seed(seed)
    return [stream.mask(data.batch(torch.arange(i, min(i + batch_size, len(data)))), g)
            for i in range(0, len(data), batch_size)]


@torch.no_grad()
def evaluate(model, batches: Sequence[dict[str, torch.Tensor]], amp: bool = True) -> dict[str, float]:
    """``mlm_accuracy`` (top-1 at the masked positions), ``mlm_loss`` and, if the batches
    carry NSP labels, ``nsp_accuracy``, over ``batches`` (e.g. :func:`fixed_masked_batches`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = nsp_correct = nsp_total = 0
    loss_sum = 0.0
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp and device.type in ("cpu", "cuda") \
        else torch.autocast(device.type, enabled=False)
    has_nsp = hasattr(model, "cls") and hasattr(model.cls, "seq_relationship")
    with ctx:
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if has_nsp or k != "next_sentence_label"}
            out = model(**inputs)
            n = out.masked_labels.numel()
            correct += int((out.mlm_logits.argmax(-1) == out.masked_labels).sum())
            loss_sum += float(out.mlm_loss) * n
            total += n
            if "next_sentence_label" in batch and out.nsp_logits is not None:
                nsp_correct += int((out.nsp_logits.argmax(-1).cpu() == batch["next_sentence_label"]).sum())
                nsp_total += len(batch["next_sentence_label"])
    model.train(was_training)
    result = {"mlm_accuracy": correct / max(total, 1), "mlm_loss": loss_sum / max(total, 1)}
    if nsp_total:
        result["nsp_accuracy"] = nsp_correct / nsp_total
    return result


def unigram_baseline(train: PretrainingData, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The best context-free guess: always the most frequent training token. Its accuracy
    on the masked positions of ``batches`` is the bar a model must clear to show it reads context."""
    ids = train.input_ids[train.special_tokens_mask == 0]
    counts = torch.bincount(ids)
    guess = int(counts.argmax())
    labels = torch.cat([b["labels"][b["labels"] != IGNORE_INDEX] for b in batches])
    return {"token_id": guess, "accuracy": float((labels == guess).float().mean())}


def frequent_pieces(data: PretrainingData, n: int = 100) -> set[int]:
    """The ``n`` most frequent pieces of ``data``'s segments: mostly function words and punctuation."""
    counts = torch.bincount(data.input_ids[data.special_tokens_mask == 0])
    return set(counts.topk(min(n, len(counts))).indices.tolist())


def segment_overlap(data: PretrainingData, ignore: set[int] = frozenset()) -> torch.Tensor:
    """For every pair, the Jaccard overlap of the pieces of A and of B, ``|A & B| / |A | B|``,
    over piece *sets* without the pieces in ``ignore`` (e.g. :func:`frequent_pieces`:
    function words say nothing about topic). Order-blind: A B and B A score the same."""
    real = data.special_tokens_mask == 0
    scores = torch.empty(len(data))
    for r in range(len(data)):
        ids, seg = data.input_ids[r][real[r]].tolist(), data.token_type_ids[r][real[r]].tolist()
        a = {i for i, s in zip(ids, seg) if s == 0} - ignore
        b = {i for i, s in zip(ids, seg) if s == 1} - ignore
        scores[r] = len(a & b) / max(len(a | b), 1)
    return scores


def topic_baseline(train: PretrainingData, tests: dict[str, PretrainingData], stopwords: int = 100
                   ) -> dict[str, Any]:
    """NSP without a model: call a pair IsNext when A and B share enough pieces
    (:func:`segment_overlap`, leaving out the ``stopwords`` most frequent pieces of
    ``train``), with the threshold that scores best on ``train``.

    It knows nothing of order or coherence, only "same topic?". Returns the
    ``threshold``, its accuracy on ``train`` and on each set of ``tests``.
    """
    def accuracy(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> float:
        return float((torch.where(scores >= threshold, IS_NEXT, NOT_NEXT) == labels).float().mean())

    ignore = frequent_pieces(train, stopwords)
    scores = segment_overlap(train, ignore)
    candidates = scores.quantile(torch.linspace(0, 1, 201)).unique().tolist()
    best = max(candidates, key=lambda t: accuracy(scores, train.next_sentence_label, t))
    result: dict[str, Any] = {"threshold": best, "train": accuracy(scores, train.next_sentence_label, best)}
    for name, data in tests.items():
        result[name] = accuracy(segment_overlap(data, ignore), data.next_sentence_label, best)
    return result


@torch.no_grad()
def fill_in_the_blank(model, tokenizer, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """The top-``k`` pieces (and probabilities) at each ``[MASK]`` in ``text``.

    >>> fill_in_the_blank(model, tok, "The capital of France is [MASK].")  # doctest: +SKIP
    [[('paris', 0.41), ...]]
    """
    enc = tokenizer.encode(text)
    ids = torch.tensor([enc.ids])
    positions = (ids[0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(positions) == 0:
        raise ValueError(f"no [MASK] in {text!r}; write [MASK] where the model should fill in a word")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(ids.to(device)).mlm_logits[0, positions].float()
    model.train(was_training)
    probs = logits.softmax(-1)
    top = probs.topk(k, dim=-1)
    return [[(tokenizer.ids_to_tokens[int(i)], float(p)) for p, i in zip(ps, ix)]
            for ps, ix in zip(top.values, top.indices)]


@torch.no_grad()
def nearest_tokens(model, tokenizer, word: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` vocabulary pieces whose input embeddings are closest (cosine) to ``word``'s."""
    if word not in tokenizer.vocab:
        raise KeyError(f"{word!r} is not a piece of this vocabulary; try a frequent whole word")
    emb = model.bert.embeddings.word_embeddings.weight.float()
    emb = torch.nn.functional.normalize(emb, dim=-1)
    sims = emb @ emb[tokenizer.vocab[word]]
    sims[tokenizer.vocab[word]] = -2.0
    sims[tokenizer.all_special_ids] = -2.0
    top = sims.topk(k)
    return [(tokenizer.ids_to_tokens[int(i)], float(s)) for s, i in zip(top.values, top.indices)]


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Recipe:
    """One pretraining run: the model, the data and the optimisation, all in one place.

    ``size`` is a :meth:`BertConfig.preset` name; the vocabulary size comes from the
    tokenizer and ``max_position_embeddings`` from ``max_length``. Everything is fixed
    in steps, not seconds, so a run is the same on every machine (only its duration
    changes).
    """

    size: str = "tiny"
    max_length: int = 64
    copies: int = 2
    batch_size: int = 32
    # 1e-3: at 2e-3 (and 3e-3 with a longer warmup) the tiny model sat on the unigram
    # plateau, NSP at chance, for thousands of steps, leaving it at a point that tiny
    # numeric changes moved; at 1e-3 NSP left chance by step 1,400 and the masked
    # accuracy kept rising (18.8% at step 2,400 against 15.9% at 2e-3, measured here).
    lr: float = 1e-3
    warmup_steps: int = 200
    max_steps: int = 4800
    weight_decay: float = 0.01
    dropout: float = 0.0
    mlm_probability: float = 0.15
    use_nsp: bool = True
    negatives: str = "other_article"
    eval_every: int = 200
    eval_pairs: int = 1024
    amp: str | None = "auto"
    seed: int = 0

    def config(self, vocab_size: int) -> BertConfig:
        return BertConfig.preset(self.size, vocab_size=vocab_size, max_position_embeddings=self.max_length,
                                 hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout)

    def replace(self, **changes: Any) -> "Recipe":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown Recipe field(s) {sorted(unknown)}; fields: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


def _recipes(profile: str) -> dict[str, Recipe]:
    book = {
        # The book's model: BERT's architecture at Google's "tiny" size (2 layers x 128),
        # 64-token pairs, as many optimizer steps as a few CPU minutes allow.
        "cpu": Recipe(),
        "gpu": Recipe(size="mini", max_length=128, copies=5, batch_size=128, lr=1e-3, warmup_steps=1000,
                      max_steps=20_000, dropout=0.1, eval_every=500, eval_pairs=4096),
    }[profile]
    return {
        "book": book,
        # A few seconds, for tests and smoke runs; learns next to nothing.
        "smoke": Recipe(copies=1, batch_size=16, max_steps=20, warmup_steps=5, eval_every=10, eval_pairs=64),
    }


def recipe(preset: str = "book", profile: str | None = None, **changes: Any) -> Recipe:
    """The recipe called ``preset`` (``"book"``: the book's model; ``"smoke"``: a few
    seconds) at ``profile`` (default: the current one), with any field changed:
    ``recipe("book", use_nsp=False)``, ``recipe("book", profile="gpu")``."""
    profile = profile or runtime.profile()
    if profile not in runtime.PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {runtime.PROFILES}")
    presets = _recipes(profile)
    if preset not in presets:
        raise ValueError(f"unknown pretraining preset {preset!r}; choose one of {sorted(presets)}")
    return presets[preset].replace(**changes) if changes else presets[preset]


@dataclass
class PretrainRun:
    """What :func:`pretrain` returns: the trained model and how it got there."""

    model: BertForPreTraining
    tokenizer: Any
    history: Any  # bertmini.train.History
    recipe: Recipe
    results: dict[str, float]


def pretrain(rcp: Recipe | str = "book", *, tokenizer=None, train_data: PretrainingData | None = None,
             eval_batches: Sequence[dict[str, torch.Tensor]] | None = None, progress: bool = True,
             desc: str = "pretrain") -> PretrainRun:
    """Pretrain a fresh :class:`BertForPreTraining` as ``rcp`` says, with :func:`bertmini.train.train`.

    ``tokenizer`` defaults to the chapter-1 vocabulary (``load_or_train_vocab(8000)``);
    ``train_data`` to the NSP pairs of the training articles and ``eval_batches`` to
    the held-out (validation) articles with a fixed mask; pass them to reuse them
    across runs. Held-out MLM accuracy (and NSP accuracy) is measured every
    ``rcp.eval_every`` steps on ``rcp.eval_pairs`` pairs, and on all of them at the end
    (``results``). Deterministic for a given recipe.
    """
    from .tokenization import load_or_train_vocab
    from .train import TrainConfig, train

    rcp = recipe(rcp) if isinstance(rcp, str) else rcp
    tokenizer = tokenizer if tokenizer is not None else load_or_train_vocab(8000, progress=progress)
    if train_data is None:
        train_data = pretraining_data("train", tokenizer, rcp.max_length, copies=rcp.copies, seed=rcp.seed,
                                      negatives=rcp.negatives)
    if eval_batches is None:
        eval_batches = fixed_masked_batches(
            pretraining_data("validation", tokenizer, rcp.max_length, seed=rcp.seed + 1, negatives=rcp.negatives),
            tokenizer, mlm_probability=rcp.mlm_probability)
    if train_data.input_ids.shape[1] > rcp.max_length:
        raise ValueError(f"train_data has {train_data.input_ids.shape[1]}-token rows but the recipe's "
                         f"max_length is {rcp.max_length}; build the data with max_length={rcp.max_length}")
    n_eval = max(1, -(-rcp.eval_pairs // eval_batches[0]["input_ids"].shape[0]))
    runtime.seed_everything(rcp.seed)
    model = BertForPreTraining(rcp.config(len(tokenizer)))
    config = TrainConfig(lr=rcp.lr, weight_decay=rcp.weight_decay, warmup_steps=rcp.warmup_steps,
                         max_steps=rcp.max_steps, amp=rcp.amp, eval_every=rcp.eval_every, seed=rcp.seed,
                         progress=progress, desc=desc)
    stream = MaskedBatches(train_data, tokenizer, rcp.batch_size, mlm_probability=rcp.mlm_probability,
                           use_nsp=rcp.use_nsp)
    history = train(model, stream, config, eval_fn=lambda m: evaluate(m, eval_batches[:n_eval]))
    results = evaluate(model, eval_batches)
    results["train_seconds"] = history.elapsed
    results["steps"] = len(history)
    return PretrainRun(model.eval(), tokenizer, history, rcp, results)


def pretrained_dir(preset: str = "book") -> Path:
    """Where :func:`load_or_pretrain` keeps a preset: ``<cache>/pretrained/<preset>-<profile>/``."""
    return runtime.cache_dir() / "pretrained" / f"{preset}-{runtime.profile()}"


def save_pretrained(run: PretrainRun, directory: str | Path) -> Path:
    """Save a run as a directory: ``model.safetensors`` (+ training state with the history,
    via :func:`bertmini.train.save_checkpoint`), ``config.json``, ``vocab.txt``, ``recipe.json``.
    ``bertmini.hf.load_pretrained(directory)`` reads its encoder."""
    from .train import save_checkpoint

    directory = Path(directory)
    save_checkpoint(directory, run.model, step=len(run.history), history=run.history,
                    extra={"recipe": dataclasses.asdict(run.recipe), "results": dict(run.results)})
    runtime.atomic_write_bytes(directory / "recipe.json", json.dumps(dataclasses.asdict(run.recipe), indent=1).encode())
    run.tokenizer.save(directory / "vocab.txt")
    run.model.config.to_json(directory / "config.json")  # written last: its presence marks a complete save
    return directory


def load_saved(directory: str | Path) -> tuple[BertForPreTraining, Any, Any, dict[str, float]]:
    """Read a directory written by :func:`save_pretrained`: ``(model, tokenizer, history, results)``."""
    from .tokenization import BertTokenizer
    from .train import load_checkpoint

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"no complete pretrained model in {directory} (config.json missing); "
                                "train one with load_or_pretrain() or save_pretrained()")
    model = BertForPreTraining(BertConfig.from_json(directory / "config.json"))
    state = load_checkpoint(directory, model)
    tokenizer = BertTokenizer.from_vocab(directory / "vocab.txt")
    return model.eval(), tokenizer, state["history"], dict(state["extra"].get("results", {}))


def load_or_pretrain(preset: str = "book", *, progress: bool = True, retrain: bool = False
                     ) -> tuple[BertForPreTraining, Any]:
    """The book's pretrained model and its tokenizer: ``model, tokenizer = load_or_pretrain()``.

    Loads ``pretrained_dir(preset)`` if it holds a model, else pretrains it with
    :func:`pretrain` (deterministic; at the cpu profile about five minutes on two
    cores, with a progress bar) and saves it there first. ``retrain=True`` trains
    again even if a model is cached. The model is a :class:`BertForPreTraining` in
    eval mode; ``model.bert`` is the encoder for fine-tuning. The history and
    held-out results of the run are in :func:`load_pretraining_history`.
    """
    directory = pretrained_dir(preset)
    if not retrain and (directory / "config.json").is_file():
        try:
            model, tokenizer, _, _ = load_saved(directory)
            return model, tokenizer
        except (OSError, ValueError) as e:  # a damaged cache: train again
            if progress:
                print(f"could not load {directory} ({e}); pretraining again")
    run = pretrain(preset, progress=progress, desc=f"pretrain {preset}")
    save_pretrained(run, directory)
    return run.model, run.tokenizer


def load_pretraining_history(preset: str = "book") -> tuple[Any, dict[str, float]]:
    """``(history, results)`` of the cached run of ``preset`` (train it first with :func:`load_or_pretrain`)."""
    _, _, history, results = load_saved(pretrained_dir(preset))
    return history, results
