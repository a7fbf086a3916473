"""Fine-tuning: the recipe, the data preparation for classification and tagging, and prediction.

One pretrained encoder, a small head on top (:mod:`bertmini.task_heads`), three task shapes here:

* a single sentence -> a label (sentiment, topic): :func:`encode_classification`;
* a pair of texts -> a label (does this description match this article?): the same
  function with ``pairs=``, the pair packed as ``[CLS] a [SEP] b [SEP]``;
* words -> a BIO tag each (NER): :func:`encode_ner`, the word's tag on its first
  sub-token and ``IGNORE_INDEX`` (skipped by the loss) on the rest.

The fourth shape, a question and a context -> a span, has its windows and answers in
:mod:`bertmini.qa`; the metrics are in :mod:`bertmini.metrics` and the baselines (bag
of words, frozen features) in :mod:`bertmini.baselines`.

The recipe (:func:`finetune`) is the one of the BERT paper: AdamW with weight decay
0.01 except on biases and LayerNorm, 10% linear warmup then linear decay, batch 32
(reached by gradient accumulation if memory is short), 2-4 epochs, each batch padded
only to its own longest sequence (:func:`collate`, :class:`Batches`). It reuses
:mod:`bertmini.train` for the loop. :func:`predict_logits`, :func:`classification_scores`
and :func:`predict_tags` use the result; :func:`save_finetuned` / :func:`load_finetuned`
keep a sequence classifier with its tokenizer and label names.

Chapter 5a's sentiment classifier is made by a recipe other chapters reuse (chapter 6b distils it,
chapter 6d trains the same with ``transformers``' Trainer): :class:`SentimentRecipe`,
:func:`sentiment_sample` and :func:`load_or_finetune_sentiment_minilm`, cached where 5a saves it.

Not handled: multi-label classification, regression heads, CRF decoding for NER,
and saving token or span heads with :func:`save_finetuned`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import operator
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from bertmini import runtime
from bertmini.config import IGNORE_INDEX
from bertmini.metrics import accuracy, macro_f1
from bertmini.padding import length_mask, pad_rows


# ------------------------------------------------------------------ data preparation
def _check_texts(texts, what: str, items: str = "texts") -> None:
    """Refuse one string where a list is expected (it would be read as one text per
    character) and anything that is not a list at all (None, a number)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} expects a list of {items}, got one string {texts!r:.40}; wrap it in a list: [text]")
    if texts is None or not hasattr(texts, "__len__") or not hasattr(texts, "__getitem__"):
        raise TypeError(f"{what} expects a list of {items}, got {texts!r:.40} ({type(texts).__name__})")


def _check_batch_size(value, name: str = "batch_size") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int (the BERT paper fine-tunes with 32), got {value!r}")
    return value


def _check_label_names(labels: Sequence[str], model: nn.Module, what: str) -> None:
    num_labels = getattr(model, "num_labels", None)
    if num_labels is not None and len(labels) != num_labels:
        raise ValueError(f"{what}: {len(labels)} label name(s) for a model with {num_labels} outputs; "
                         "pass one name per output, in the order of the model's classes")


def _check_labels(labels: Sequence[int], num_labels: int | None, what: str) -> None:
    for i, y in enumerate(labels):
        try:
            operator.index(y)  # int, numpy int, an integer tensor element; not a name, not a float
        except TypeError:
            raise TypeError(f"{what}: label {i} is {y!r} ({type(y).__name__}), not a class index; map each "
                            "label name to its index first, e.g. [label_list.index(y) for y in labels]") from None
    if num_labels is None:
        num_labels = max((int(y) for y in labels), default=-1) + 1
    bad = sorted({int(y) for y in labels if not 0 <= int(y) < num_labels})
    if bad:
        raise ValueError(f"{what}: labels {bad[:10]} are outside the label set 0..{num_labels - 1}; "
                         "map each label name to its index in the task's label list first")


def encode_classification(tokenizer, texts: Sequence[str], labels: Sequence[int] | None = None, *,
                          pairs: Sequence[str] | None = None, num_labels: int | None = None,
                          max_length: int = 128) -> list[dict]:
    """One example dict per text (or text pair): ``input_ids``, ``token_type_ids`` (lists,
    unpadded; :func:`collate` pads each batch) and ``labels`` if given.

    Over-long inputs are truncated to ``max_length`` tokens, longest segment first.
    ``num_labels`` (default: ``max(labels) + 1``) is checked so that a label outside
    the set fails here, with its value, instead of deep inside the loss.
    """
    _check_texts(texts, "encode_classification")
    if pairs is not None:
        _check_texts(pairs, "encode_classification pairs=")
    if labels is not None:
        _check_texts(labels, "encode_classification labels=", "class indices")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs; pass one pair per text")
    if labels is not None:
        if len(labels) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels; pass one label per text")
        _check_labels(labels, num_labels, "encode_classification")
    examples = []
    for i, text in enumerate(texts):
        enc = tokenizer.encode(text, None if pairs is None else pairs[i], max_length=max_length, truncation=True)
        ex = {"input_ids": enc.ids, "token_type_ids": enc.token_type_ids}
        if labels is not None:
            ex["labels"] = int(labels[i])
        examples.append(ex)
    return examples


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Word labels -> token labels: each word's label on its *first*
    sub-token, ``IGNORE_INDEX`` (-100, skipped by the loss) on its other
    sub-tokens and on ``[CLS]``/``[SEP]``.

    >>> align_labels([None, 0, 1, 1, 2, None], [3, 5, 0])
    [-100, 3, 5, -100, 0, -100]
    """
    out, previous = [], None
    for w in word_ids:  # w: the index of the word a token comes from
        first_piece = w is not None and w != previous
        out.append(int(word_labels[w]) if first_piece else IGNORE_INDEX)
        previous = w
    return out


def word_ids_for(words: Sequence[str], offsets: Sequence[tuple[int, int]],
                 special: Sequence[int]) -> tuple[str, list[int | None]]:
    """Helper of :func:`encode_ner`: the words joined by spaces, and for each token the
    index of the word its characters come from (None for special tokens)."""
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    word_of = []
    for (a, _), is_special in zip(offsets, special):
        if is_special:
            word_of.append(None)
            continue
        lo, hi = 0, len(starts) - 1  # the last word starting at or before character a
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if starts[mid] <= a else (lo, mid - 1)
        word_of.append(lo)
    return " ".join(words), word_of


def encode_ner(tokenizer, sentences: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None, *,
               label_list: Sequence[str], max_length: int = 128) -> list[dict]:
    """One example per sentence of words (tweets come pre-split): ``input_ids``,
    ``token_type_ids``, ``word_ids`` and, with ``tags``, token ``labels`` aligned by
    :func:`align_labels`. Words past ``max_length`` tokens are cut off (they are
    predicted ``O``). A tag not in ``label_list`` is an error that names it, and so is a tag
    on a word that has no token (empty, whitespace), whose tag would otherwise be lost."""
    _check_texts(sentences, "encode_ner", "sentences (each a list of words)")
    index = {t: i for i, t in enumerate(label_list)}
    examples = []
    for s, words in enumerate(sentences):
        if isinstance(words, str):
            raise TypeError(f"sentence {s} is one string; encode_ner takes each sentence split into words, "
                            "e.g. sentence.split()")
        if len(words) == 0:
            raise ValueError(f"sentence {s} has no words")
        enc = tokenizer.encode(" ".join(words), max_length=max_length, truncation=True)
        _, word_of = word_ids_for(words, enc.offsets, enc.special_tokens_mask)
        ex = {"input_ids": enc.ids, "token_type_ids": enc.token_type_ids, "word_ids": word_of,
              "num_words": len(words)}
        if tags is not None:
            if len(tags[s]) != len(words):
                raise ValueError(f"sentence {s}: {len(words)} words but {len(tags[s])} tags")
            unknown = sorted(set(tags[s]) - set(index))
            if unknown:
                raise ValueError(f"sentence {s}: tags {unknown} are not in the label list {list(label_list)}")
            seen = set(word_of)  # a word with no token at all would lose its tag silently
            empty = [w for w in range(len(words)) if w not in seen and not tokenizer.tokenize(words[w])]
            if empty:
                w = empty[0]
                raise ValueError(f"sentence {s}, word {w} ({words[w]!r}) has no tokens (empty, whitespace or only "
                                 f"control characters), so its tag {tags[s][w]!r} would be lost; remove the word "
                                 "and its tag, or replace the word (e.g. by '[UNK]')")
            ex["labels"] = align_labels(word_of, [index[t] for t in tags[s]])
        examples.append(ex)
    return examples


# ------------------------------------------------------------------ batches
_MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask", "labels", "start_positions", "end_positions")


def collate(examples: Sequence[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Dynamic padding: stack a batch, padding each list to the longest ``input_ids`` in
    *this* batch (ids with ``pad_token_id``, token labels with ``IGNORE_INDEX``, segment
    ids with 0), and add ``attention_mask``. Only the keys a model takes are kept
    (``word_ids`` etc. stay with the examples)."""
    if len(examples) == 0:
        raise ValueError("collate: the batch is empty; give at least one example")
    lengths = [len(ex["input_ids"]) for ex in examples]
    width = max(lengths)
    pad_value = {"input_ids": pad_token_id, "labels": IGNORE_INDEX}
    batch: dict[str, torch.Tensor] = {}
    for key in _MODEL_KEYS:
        if key == "attention_mask":
            batch[key] = length_mask(lengths, width)
        elif key not in examples[0]:
            continue
        elif isinstance(examples[0][key], list):  # one value per token
            batch[key] = pad_rows([ex[key] for ex in examples], pad_value.get(key, 0), length=width)
        else:  # one value per example (a class, a span end)
            batch[key] = torch.tensor([ex[key] for ex in examples], dtype=torch.long)
    return batch


class Batches:
    """Padded batches of ``examples``, one epoch per ``iter()``: what ``train`` wants.

    With ``shuffle`` each epoch draws a fresh order from torch's global RNG (which
    ``train`` seeds), when its first batch is taken. ``len()`` is the number of
    batches per epoch, so ``TrainConfig(epochs=...)`` can count steps.
    """

    def __init__(self, examples: Sequence[dict], batch_size: int, shuffle: bool = True, pad_token_id: int = 0):
        if len(examples) == 0:
            raise ValueError("Batches: no examples; the training set is empty")
        self.examples, self.batch_size = examples, _check_batch_size(batch_size)
        self.shuffle, self.pad_token_id = shuffle, pad_token_id

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.examples)
        order = torch.randperm(n).tolist() if self.shuffle else list(range(n))
        for i in range(0, n, self.batch_size):
            yield self.collate_batch([self.examples[j] for j in order[i:i + self.batch_size]])

    def collate_batch(self, chunk: Sequence[dict]) -> dict[str, torch.Tensor]:
        """One padded batch of ``chunk`` (:func:`collate`); a subclass may pad differently."""
        return collate(chunk, self.pad_token_id)


def make_batches(examples: Sequence[dict], batch_size: int, shuffle: bool = True, pad_token_id: int = 0
                 ) -> Batches:
    """``Batches(examples, batch_size, shuffle, pad_token_id)``: one padded epoch per ``iter()``, with a length."""
    return Batches(examples, batch_size, shuffle=shuffle, pad_token_id=pad_token_id)


# ------------------------------------------------------------------ the recipe
def finetune(model: nn.Module, examples: Sequence[dict], *, lr: float,
             epochs: float = 3, batch_size: int = 32,
             micro_batch_size: int | None = None, warmup_ratio: float = 0.1,
             weight_decay: float = 0.01, max_steps: int | None = None,
             seed: int = 0, eval_fn=None, eval_every: int | None = None,
             pad_token_id: int = 0, desc: str = "fine-tune",
             amp: str | None = None, progress: bool = True):
    """Fine-tune ``model`` in place with the BERT paper's recipe; return the
    ``History``.

    AdamW (no decay on biases and LayerNorm, ``weight_decay`` elsewhere), the
    learning rate warmed up linearly over the first ``warmup_ratio`` of the
    steps, then decayed linearly to 0; an effective batch of ``batch_size``
    made of ``batch_size // micro_batch_size`` accumulated micro-batches (so
    memory holds only a micro-batch); each micro-batch padded to its own
    longest example. The loop is ``bertmini.train``'s. ``amp=None`` (fp32) by
    default: small CPU runs gain little from bf16 and lose precision.
    ``examples`` may also be a :class:`Batches` of micro-batches (of a
    subclass that adds keys to each batch, as :mod:`bertmini.distillation`
    does).
    """
    from bertmini.train import TrainConfig, train

    micro = _micro_batch_size(batch_size, micro_batch_size)
    data = _training_batches(examples, micro, pad_token_id)
    config = TrainConfig(
        lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
        epochs=None if max_steps else epochs, max_steps=max_steps,
        grad_accum_steps=batch_size // micro, amp=amp, eval_every=eval_every,
        seed=seed, desc=desc, progress=progress, log_every=5)
    return train(model, data, config, eval_fn=eval_fn)


def _micro_batch_size(batch_size: int, micro_batch_size: int | None) -> int:
    """The micro-batch :func:`finetune` pads and runs, checked to divide the batch."""
    _check_batch_size(batch_size)
    micro = batch_size if micro_batch_size is None else _check_batch_size(micro_batch_size, "micro_batch_size")
    if batch_size % micro:
        raise ValueError(f"batch_size={batch_size} is not a multiple of micro_batch_size={micro}")
    return micro


def _training_batches(examples, micro: int, pad_token_id: int) -> Batches:
    """Shuffled micro-batches of ``examples``, or ``examples`` itself if it is a
    :class:`Batches` of ``micro`` examples each."""
    if not isinstance(examples, Batches):
        return Batches(examples, micro, shuffle=True, pad_token_id=pad_token_id)
    if examples.batch_size != micro:
        raise ValueError(
            f"the Batches given hold {examples.batch_size} examples each; finetune "
            f"needs micro-batches of {micro} (micro_batch_size, else batch_size)")
    return examples


# ------------------------------------------------------------------ prediction
def predict_logits(model: nn.Module, examples: Sequence[dict], batch_size: int = 64,
                   pad_token_id: int = 0) -> list[torch.Tensor]:
    """Logits for each example, in order, without labels (eval mode, no gradients). For a
    sequence head each is ``(num_labels,)``; for a token or span head ``(len, ...)`` with
    the padding cut off."""
    if len(examples) == 0:
        raise ValueError("predict_logits: no examples")
    _check_batch_size(batch_size)
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    with runtime.eval_mode(model):
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_token_id).items()
                     if k in ("input_ids", "token_type_ids", "attention_mask")}
            logits = model(**batch).logits.float().cpu()
            for row, ex in zip(logits, chunk):
                out.append(row if row.dim() == 1 else row[:len(ex["input_ids"])])
    return out


def classification_scores(model: nn.Module, examples: Sequence[dict], batch_size: int = 64) -> dict[str, float]:
    """Accuracy and macro-F1 of a sequence classifier on labelled examples."""
    preds = [int(l.argmax()) for l in predict_logits(model, examples, batch_size)]
    gold = [ex["labels"] for ex in examples]
    return {"accuracy": accuracy(preds, gold), "macro_f1": macro_f1(preds, gold)}


def predict_tags(model: nn.Module, examples: Sequence[dict], label_list: Sequence[str],
                 batch_size: int = 64) -> list[list[str]]:
    """One tag per *word*: the prediction at each word's first sub-token (``O`` for
    words cut off by truncation)."""
    tags = []
    for logits, ex in zip(predict_logits(model, examples, batch_size), examples):
        words = ["O"] * ex["num_words"]
        best = logits.argmax(-1).tolist()
        previous = None
        for pos, w in enumerate(ex["word_ids"]):
            if w is not None and w != previous:
                words[w] = label_list[best[pos]]
            previous = w
        tags.append(words)
    return tags


# ------------------------------------------------------------------ use what you trained
@dataclass
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]


@dataclass
class FineTunedClassifier:
    """A sequence classifier ready to use: model, tokenizer and label names together."""

    model: nn.Module
    tokenizer: Any
    labels: list[str]
    max_length: int = 128
    recipe: dict | None = None  # how it was trained, if the saver said

    def __post_init__(self) -> None:
        _check_texts(self.labels, "FineTunedClassifier labels=", "label names")
        _check_label_names(self.labels, self.model, "FineTunedClassifier")

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Prediction]:
        """The most probable label of each text (or pair), with its softmax probability."""
        _check_texts(texts, "predict")
        if len(texts) == 0:
            raise ValueError("predict: no texts given")
        examples = encode_classification(self.tokenizer, texts, pairs=pairs, max_length=self.max_length)
        out = []
        for logits in predict_logits(self.model, examples):
            p = logits.softmax(-1)
            k = int(p.argmax())
            out.append(Prediction(self.labels[k], float(p[k]),
                                  {name: float(v) for name, v in zip(self.labels, p)}))
        return out


def save_finetuned(directory: str | Path, model: nn.Module, tokenizer, labels: Sequence[str],
                   max_length: int = 128, recipe: dict | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``vocab.txt`` and ``labels.json``:
    everything :func:`load_finetuned` needs, no pickles. Only sequence classifiers.
    ``recipe`` (a JSON-able dict, e.g. how it was trained) is kept in ``labels.json``.
    All or nothing (:func:`bertmini.checkpoint.write_files_atomically`): a crash part-way
    leaves the previous save whole; other files in ``directory`` are left alone."""
    from safetensors.torch import save as st_save

    from bertmini.checkpoint import config_and_vocab_files, write_files_atomically
    from bertmini.task_heads import BertForSequenceClassification

    if not isinstance(model, BertForSequenceClassification):
        raise TypeError(f"save_finetuned saves a BertForSequenceClassification, got {type(model).__name__}")
    _check_label_names(labels, model, "save_finetuned")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"labels": list(labels), "max_length": max_length, "task": "sequence_classification"}
    if recipe is not None:
        meta["recipe"] = recipe
    files = {"model.safetensors": st_save(state), **config_and_vocab_files(model.config, tokenizer),
             "labels.json": json.dumps(meta, indent=2).encode()}
    return write_files_atomically(directory, files)


def load_finetuned(directory: str | Path) -> FineTunedClassifier:
    """Load what :func:`save_finetuned` wrote, in eval mode. Every file is checked against
    the sha256 saved with it; a damaged one is named, never loaded."""
    from bertmini.checkpoint import (load_state_dict_strict, parse_json, parse_safetensors, read_config_and_vocab,
                                     read_files)
    from bertmini.task_heads import BertForSequenceClassification

    directory = Path(directory)
    files = read_files(directory, ["config.json", "model.safetensors", "vocab.txt", "labels.json"],
                       hint="; save the model with save_finetuned(directory, ...)")
    meta = parse_json(files["labels.json"], directory / "labels.json")
    config, tokenizer = read_config_and_vocab(files, directory)
    weights, _ = parse_safetensors(files["model.safetensors"], directory / "model.safetensors")
    model = BertForSequenceClassification(config, num_labels=len(meta["labels"]))
    load_state_dict_strict(model, weights, where=str(directory / "model.safetensors"))
    return FineTunedClassifier(model.eval(), tokenizer, list(meta["labels"]), meta["max_length"],
                               meta.get("recipe"))


# ------------------------------------------------------------------ chapter 5a's sentiment classifier
SENTIMENT_LABELS = ["negative", "positive"]


@dataclass(frozen=True)
class SentimentRecipe:
    """How chapter 5a fine-tunes MiniLM on sentiment: the first ``n_train`` snippets of the
    training split in a fixed shuffled order (:func:`sentiment_sample`), ``max_length`` tokens,
    then :func:`finetune` with this peak ``lr``, ``epochs`` and ``batch_size``; the head is
    initialised right after ``seed_everything(seed)``."""

    n_train: int
    max_length: int = 64  # the snippets average about 27 WordPiece tokens; 64 cuts almost none
    lr: float = 1e-4
    epochs: int = 3       # 3 scored above 2 on the validation split
    batch_size: int = 32
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sentiment_recipe(profile: str | None = None) -> SentimentRecipe:
    """Chapter 5a's recipe at ``profile`` (default: the current one): 1,000 training snippets on
    a CPU, 8,000 on a GPU."""
    return SentimentRecipe(n_train=runtime.by_profile(cpu=1000, gpu=8000, profile_name=profile))


def sentiment_sample(n: int) -> list[tuple[str, int]]:
    """The first ``n`` ``(text, label)`` pairs of the sentiment training split, shuffled with a
    fixed seed: the same sample on every machine, and each smaller sample inside the larger."""
    from bertmini import data

    rows = data.sentiment("train")
    random.Random(0).shuffle(rows)
    return rows[:n]


def sentiment_classifier_dir() -> Path:
    """Where chapter 5a saves its fine-tuned MiniLM (one folder per profile)."""
    return runtime.cache_dir() / "finetuned" / f"sentiment_minilm-{runtime.profile()}"


def finetune_sentiment_minilm(recipe: SentimentRecipe | None = None, *, progress: bool = True):
    """MiniLM fine-tuned on sentiment by ``recipe`` (default :func:`sentiment_recipe`), as
    chapter 5a does it: ``(model, tokenizer, history)``."""
    from bertmini import data
    from bertmini.hf import load_pretrained
    from bertmini.task_heads import BertForSequenceClassification
    from bertmini.tokenization import BertTokenizer

    recipe = recipe or sentiment_recipe()
    tokenizer = BertTokenizer.from_vocab(data.minilm_vocab_path())
    texts, labels = zip(*sentiment_sample(recipe.n_train))
    examples = encode_classification(tokenizer, list(texts), list(labels), num_labels=2,
                                     max_length=recipe.max_length)
    runtime.seed_everything(recipe.seed)
    model = BertForSequenceClassification.from_encoder(load_pretrained(data.minilm_path()), num_labels=2)
    history = finetune(model, examples, lr=recipe.lr, epochs=recipe.epochs, batch_size=recipe.batch_size,
                       seed=recipe.seed, desc="MiniLM on sentiment", progress=progress)
    return model, tokenizer, history


def load_or_finetune_sentiment_minilm(*, progress: bool = True) -> "FineTunedClassifier":
    """Chapter 5a's fine-tuned MiniLM from the cache (:func:`sentiment_classifier_dir`), or
    fine-tuned now by :func:`sentiment_recipe` and saved there (about a minute or two on a CPU).
    A cached model trained by another recipe, or damaged, is trained again."""
    from bertmini.checkpoint import CorruptCheckpointError

    recipe = sentiment_recipe()
    directory = sentiment_classifier_dir()
    if (directory / "labels.json").exists():
        try:
            cached = load_finetuned(directory)
            if cached.recipe == recipe.to_dict():
                return cached
        except CorruptCheckpointError:
            pass
    model, tokenizer, _ = finetune_sentiment_minilm(recipe, progress=progress)
    save_finetuned(directory, model, tokenizer, SENTIMENT_LABELS, max_length=recipe.max_length,
                   recipe=recipe.to_dict())
    return load_finetuned(directory)
