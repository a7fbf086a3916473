"""Masked-language-model corruption: BERT's 15% and 80/10/10, whole words, static vs dynamic.

BERT learns by filling in blanks. For each sequence we *select* positions with
probability ``mlm_probability`` (0.15 in the paper), never special tokens or
padding. The model must predict the original token at every selected position
(``labels``), and nowhere else (``labels == -100``, the value
``torch.nn.functional.cross_entropy`` ignores). The selected positions are then
*corrupted*: 80% become ``[MASK]``, 10% a random token, 10% stay unchanged, so
that the model cannot trust the input token and never sees ``[MASK]`` as the
only thing worth encoding (chapter 2 shows why).

- :func:`mask_tokens` selects token by token, exactly as ``transformers``'
  ``DataCollatorForLanguageModeling`` does.
- :func:`whole_word_mask` selects *words*: all WordPiece pieces of a word are
  selected together and get the same corruption. Each word is selected with
  probability ``mlm_probability``, so the expected fraction of selected
  *tokens* is still ``mlm_probability``.
- :class:`MLMCollator` pads a list of examples into a batch and masks it, for a
  ``torch.utils.data.DataLoader``: *dynamic* (a fresh mask every time an
  example is seen, as in RoBERTa) or *static* (one fixed mask per example, as
  in the original BERT data, keyed on ``example["idx"]``).
- :class:`MaskedBatches` is the pretraining stream of chapter 4: already padded rows,
  shuffled and masked afresh every epoch with :class:`MLMCollator`'s masking.

Not handled: span masking (SpanBERT), a cap on the number of predictions per
sequence (``max_predictions_per_seq`` in Google's code), and the original BERT's
``dupe_factor`` (ten static copies of the data with different masks); the
chapter's exercises build the last one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .config import IGNORE_INDEX
from .padding import check_multiple_of, length_mask, pad_rows, padded_length
from .runtime import can_check_values

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _check_probability(name: str, p: float) -> float:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (BERT uses 0.15), got {p!r}")
    return float(p)


def _check_inputs(input_ids, special_tokens_mask, name="special_tokens_mask"):
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            "input_ids must be an integer torch.Tensor (batch, seq_len) or (seq_len,); "
            f"got {type(input_ids).__name__}"
            + (f" of dtype {input_ids.dtype}" if isinstance(input_ids, torch.Tensor) else "")
            + ". Convert with torch.tensor(ids, dtype=torch.long)."
        )
    if not isinstance(special_tokens_mask, torch.Tensor) or special_tokens_mask.shape != input_ids.shape:
        got = tuple(special_tokens_mask.shape) if isinstance(special_tokens_mask, torch.Tensor) else type(special_tokens_mask).__name__
        raise ValueError(
            f"{name} must be a tensor with the shape of input_ids {tuple(input_ids.shape)}, got {got}; "
            "it is True (or 1) at [CLS], [SEP], padding and any other position that must never be selected."
        )


def _check_vocab(input_ids, mask_token_id, vocab_size) -> None:
    """``vocab_size`` must cover ``mask_token_id`` and every id of the batch ([CLS], [SEP] included)."""
    fix = "pass vocab_size=len(tokenizer) and mask_token_id=tokenizer.mask_token_id"
    for name, v in (("vocab_size", vocab_size), ("mask_token_id", mask_token_id)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r} ({type(v).__name__}); {fix}")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id={mask_token_id} is not an id of a vocabulary of "
                         f"vocab_size={vocab_size}; {fix}")
    top = int(input_ids.max()) if can_check_values(input_ids) and input_ids.numel() else -1
    if top >= vocab_size:
        raise ValueError(f"input_ids holds id {top}, outside vocab_size={vocab_size}; {fix}")


def _random_candidates(input_ids, special, mask_token_id, vocab_size, random_token_ids):
    """The ids a selected position may be replaced with: never a special token."""
    if random_token_ids is not None:
        ids = torch.as_tensor(random_token_ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise ValueError("random_token_ids is empty; pass the ids of ordinary (non-special) tokens")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(f"random_token_ids must lie in [0, vocab_size={vocab_size})")
        return ids
    # Without an explicit list, exclude [MASK] and every id this batch shows at a special
    # position ([CLS], [SEP], [PAD] if padded). MLMCollator always passes the exact list.
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[mask_token_id] = False
    allowed[input_ids[special].long().cpu()] = False
    return allowed.nonzero().flatten()


def _rng_device(generator):
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(shape, generator, device):
    # Draw where the generator lives (the CPU by default), then move: the same numbers on any device.
    return torch.rand(shape, generator=generator, device=_rng_device(generator)).to(device)


def _corrupt(input_ids, selected, unit_u, *, mask_token_id, vocab_size,
             random_token_ids, special, generator, mask_replace_prob=0.8,
             random_replace_prob=0.1):
    """Apply 80/10/10 to the selected positions; ``unit_u`` holds one uniform
    draw per position (shared by the pieces of a word in whole-word masking)."""
    inputs = input_ids.clone()  # never modify the caller's tensor
    labels = torch.where(selected, input_ids,
                         torch.full_like(input_ids, IGNORE_INDEX))
    mask_p = _check_probability("mask_replace_prob", mask_replace_prob)
    random_p = _check_probability("random_replace_prob", random_replace_prob)
    if mask_p + random_p > 1.0 + 1e-9:
        raise ValueError(f"mask_replace_prob + random_replace_prob = "
                         f"{mask_p + random_p} exceeds 1; BERT uses 0.8 and "
                         "0.1 (the remaining 0.1 keeps the token)")
    to_mask = selected & (unit_u < mask_p)
    to_random = selected & (unit_u >= mask_p) & (unit_u < mask_p + random_p)
    # the rest (10% in BERT) keep their original token
    inputs[to_mask] = mask_token_id
    n_random = int(to_random.sum())
    if n_random:
        candidates = _random_candidates(input_ids, special, mask_token_id,
                                        vocab_size, random_token_ids)
        pick = torch.randint(len(candidates), (n_random,), generator=generator,
                             device=_rng_device(generator))
        new_ids = candidates.to(pick.device)[pick]
        inputs[to_random] = new_ids.to(inputs.device, inputs.dtype)
    return inputs, labels


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_tokens_mask: torch.Tensor,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    random_token_ids: torch.Tensor | Sequence[int] | None = None,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking, token by token. Returns ``(inputs, labels)``;
    ``input_ids`` is not modified.

    Each position where ``special_tokens_mask`` is False is selected
    independently with probability ``mlm_probability``. ``labels`` hold the
    original id at selected positions and -100 elsewhere. Of the selected
    positions, 80% become ``mask_token_id`` in ``inputs``, 10% a random id from
    ``random_token_ids``, 10% keep their token (``mask_replace_prob`` and
    ``random_replace_prob`` change the split, as in ``transformers``).

    ``special_tokens_mask`` must be True at padding too: padding is never
    selected only because the mask says so. ``random_token_ids`` (the ids a
    random replacement draws from) defaults to every id below ``vocab_size``
    except ``mask_token_id`` and the ids seen at special positions of this
    batch; pass the exact list when the batch may not show every special token
    (``MLMCollator`` does). Draws come from ``generator`` (the global torch RNG
    if None).
    """
    _check_inputs(input_ids, special_tokens_mask)
    _check_vocab(input_ids, mask_token_id, vocab_size)
    p = _check_probability("mlm_probability", mlm_probability)
    special = special_tokens_mask.bool()
    # Two uniform draws per position: one decides selection, one the 80/10/10.
    select_u = _uniform(input_ids.shape, generator, input_ids.device)
    unit_u = _uniform(input_ids.shape, generator, input_ids.device)
    selected = (select_u < p) & ~special
    return _corrupt(input_ids, selected, unit_u, mask_token_id=mask_token_id,
                    vocab_size=vocab_size, random_token_ids=random_token_ids,
                    special=special, generator=generator,
                    mask_replace_prob=mask_replace_prob,
                    random_replace_prob=random_replace_prob)


def word_ids_from_wordpieces(input_ids: torch.Tensor, is_continuation: torch.Tensor,
                             special_tokens_mask: torch.Tensor) -> torch.Tensor:
    """Word index of each position (-1 at special positions), from the WordPiece ``##`` convention.

    ``is_continuation[id]`` is True when vocabulary entry ``id`` starts with ``##``
    (see :func:`continuation_table`); a word starts at every other non-special
    position. This is how Google's ``create_pretraining_data.py`` finds words, and it
    agrees with ``BertTokenizerFast.word_ids()``: BERT's pre-tokenizer already splits
    punctuation into words of its own. A ``##`` piece right after a special token
    starts a new word (it cannot belong to one across ``[SEP]``).
    """
    special = special_tokens_mask.bool()
    cont = is_continuation.to(input_ids.device)[input_ids.long()]
    prev_special = torch.ones_like(special)
    prev_special[..., 1:] = special[..., :-1]
    starts = ~special & (~cont | prev_special)
    word_ids = starts.long().cumsum(-1) - 1
    return word_ids.masked_fill(special, -1)


def continuation_table(vocab: Mapping[str, int] | Sequence[str]) -> torch.Tensor:
    """Boolean tensor over the vocabulary: True where the entry is a ``##`` continuation piece."""
    tokens = _tokens_by_id(vocab)
    return torch.tensor([t.startswith("##") for t in tokens], dtype=torch.bool)


def whole_word_mask(
    input_ids: torch.Tensor,
    *,
    word_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    special_tokens_mask: torch.Tensor,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    random_token_ids: torch.Tensor | Sequence[int] | None = None,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking: all pieces of a word are selected together. Returns ``(inputs, labels)``.

    ``word_ids`` has the shape of ``input_ids``: positions of one word share a
    non-negative id within their row (ids need not be contiguous across rows),
    and positions with a negative id are never selected (use -1 at specials and
    padding; :func:`word_ids_from_wordpieces` builds it). Each word is selected
    with probability ``mlm_probability``, so the expected fraction of selected
    tokens is ``mlm_probability``, as with :func:`mask_tokens`. All pieces of a
    selected word share one 80/10/10 draw (a word is masked, randomised or kept as
    a whole; each randomised piece gets its own random id), so a word is never
    half hidden. Google's BERT draws 80/10/10 per piece and ``transformers``
    drops the random 10% for whole words; both differ here on purpose.
    """
    _check_inputs(input_ids, special_tokens_mask)
    _check_inputs(input_ids, word_ids, name="word_ids")
    _check_vocab(input_ids, mask_token_id, vocab_size)
    p = _check_probability("mlm_probability", mlm_probability)
    special = special_tokens_mask.bool()
    valid = (word_ids >= 0) & ~special
    rows = input_ids.reshape(-1, input_ids.shape[-1])
    wid = word_ids.reshape(rows.shape).long().clamp(min=0)
    # Make word ids unique across the batch, then draw one pair of uniforms per word.
    width = int(wid.max()) + 1 if wid.numel() else 1
    global_wid = wid + torch.arange(rows.shape[0], device=wid.device).unsqueeze(1) * width
    n_words = rows.shape[0] * width
    select_u = _uniform(n_words, generator, wid.device)[global_wid].reshape(input_ids.shape)
    unit_u = _uniform(n_words, generator, wid.device)[global_wid].reshape(input_ids.shape)
    selected = (select_u < p) & valid
    return _corrupt(input_ids, selected, unit_u, mask_token_id=mask_token_id, vocab_size=vocab_size,
                    random_token_ids=random_token_ids, special=special, generator=generator,
                    mask_replace_prob=mask_replace_prob, random_replace_prob=random_replace_prob)


# ----------------------------------------------------------------------------- collator

def _tokens_by_id(vocab) -> list[str]:
    if isinstance(vocab, Mapping):
        tokens = [""] * (max(vocab.values()) + 1)
        for tok, i in vocab.items():
            tokens[i] = tok
        return tokens
    return list(vocab)


def _vocab_of(tokenizer) -> dict[str, int]:
    """token -> id from a bertmini ``BertTokenizer``, a ``transformers`` tokenizer or a dict."""
    if isinstance(tokenizer, Mapping):
        return dict(tokenizer)
    if hasattr(tokenizer, "get_vocab"):
        return dict(tokenizer.get_vocab())
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, Mapping):
        return dict(vocab)
    if vocab is not None and hasattr(vocab, "token_to_id"):  # an object with a token list
        return {t: i for i, t in enumerate(getattr(vocab, "tokens"))}
    raise TypeError(
        f"MLMCollator cannot read a vocabulary from {type(tokenizer).__name__}; pass a bertmini "
        "BertTokenizer, a transformers BertTokenizerFast, or a dict token -> id."
    )


def _seed_for(seed: int, idx: int) -> int:
    # A fixed, well-mixed seed per (collator seed, example): the same example always
    # gets the same mask, whatever batch it lands in and whatever order epochs run.
    return (seed * 1_000_003 + int(idx) * 7_919 + 0x9E3779B9) % (2**63 - 1)


class MLMCollator:
    """Pads a list of examples into a batch and masks it, for a ``DataLoader``'s ``collate_fn``.

    Each example is a dict with ``input_ids`` (list or 1-D tensor, already with
    ``[CLS]``/``[SEP]``), and optionally ``token_type_ids``, ``next_sentence_label``
    and ``idx`` (required when ``static=True``). Returns a dict of tensors
    ``input_ids, token_type_ids, attention_mask, labels`` (padded to the longest
    example, or to a multiple of ``pad_to_multiple_of``), plus ``next_sentence_label``
    when the examples carry it.

    - ``static=False`` (dynamic, RoBERTa): a fresh mask every call, drawn from one
      generator seeded with ``seed``; the whole batch is masked in a few vectorised ops.
    - ``static=True`` (original BERT): the mask of an example depends only on
      ``(seed, example["idx"])``, so it repeats every epoch.
    - ``whole_word=True``: :func:`whole_word_mask`, words found with the ``##`` convention.

    Special tokens ([PAD], [UNK], [CLS], [SEP], [MASK], and the tokenizer's other
    special ids) and padding are never selected; random replacements never draw a
    special token nor a bracketed placeholder such as ``[unused0]``. With a
    ``DataLoader(num_workers>0)``, each worker seeds its generator with
    ``seed + worker id`` (as ``transformers`` does).
    """

    def __init__(self, tokenizer, mlm_probability: float = 0.15, whole_word: bool = False,
                 static: bool = False, seed: int = 0, pad_to_multiple_of: int | None = None,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1):
        self.mlm_probability = _check_probability("mlm_probability", mlm_probability)
        self.mask_replace_prob = _check_probability("mask_replace_prob", mask_replace_prob)
        self.random_replace_prob = _check_probability("random_replace_prob", random_replace_prob)
        if mask_replace_prob + random_replace_prob > 1.0 + 1e-9:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1 (BERT: 0.8 + 0.1)")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.whole_word, self.static, self.seed = bool(whole_word), bool(static), seed
        self.pad_to_multiple_of = check_multiple_of(pad_to_multiple_of)
        vocab = _vocab_of(tokenizer)
        for tok in ("[PAD]", "[MASK]"):
            if tok not in vocab:
                raise ValueError(f"the vocabulary has no {tok} token; MLM needs [PAD] and [MASK]")
        self.pad_token_id = int(getattr(tokenizer, "pad_token_id", None) or vocab["[PAD]"])
        self.mask_token_id = int(getattr(tokenizer, "mask_token_id", None) or vocab["[MASK]"])
        self.vocab_size = max(vocab.values()) + 1
        special_ids = {vocab[t] for t in SPECIAL_TOKENS if t in vocab}
        special_ids |= set(getattr(tokenizer, "all_special_ids", None) or [])
        self.is_special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.is_special[sorted(special_ids)] = True
        tokens = _tokens_by_id(vocab)
        placeholder = torch.tensor([t.startswith("[") and t.endswith("]") for t in tokens])
        self.random_token_ids = (~self.is_special & ~placeholder).nonzero().flatten()
        self.is_continuation = continuation_table(tokens)
        self.generator: torch.Generator | None = None

    def __repr__(self):
        kind = "static" if self.static else "dynamic"
        return (f"MLMCollator({kind}, mlm_probability={self.mlm_probability}, "
                f"whole_word={self.whole_word}, seed={self.seed}, vocab_size={self.vocab_size})")

    def _generator(self) -> torch.Generator:
        if self.generator is None:
            info = torch.utils.data.get_worker_info()
            self.generator = torch.Generator().manual_seed(self.seed + (info.id if info else 0))
        return self.generator

    def pad(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack examples into padded ``input_ids``, ``token_type_ids``, ``attention_mask``."""
        if not examples:
            raise ValueError("MLMCollator got an empty list of examples")
        ids, types = [], []
        for i, ex in enumerate(examples):
            if not isinstance(ex, Mapping) or "input_ids" not in ex:
                raise TypeError(f"example {i} must be a dict with 'input_ids', got {type(ex).__name__}")
            x = torch.as_tensor(ex["input_ids"], dtype=torch.long)
            if x.dim() != 1 or x.numel() == 0:
                raise ValueError(f"example {i}: input_ids must be a non-empty 1-D sequence, got shape {tuple(x.shape)}")
            ids.append(x)
            t = ex.get("token_type_ids")
            types.append(torch.zeros_like(x) if t is None else torch.as_tensor(t, dtype=torch.long))
            if types[-1].shape != x.shape:
                raise ValueError(f"example {i}: token_type_ids and input_ids differ in length")
        length = padded_length([len(x) for x in ids], multiple_of=self.pad_to_multiple_of)
        input_ids = pad_rows(ids, self.pad_token_id, length)
        token_type_ids = pad_rows(types, 0, length)
        attention_mask = length_mask([len(x) for x in ids], length)
        if int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(f"input_ids out of range for a vocabulary of {self.vocab_size}; "
                             "was the data tokenized with a different vocabulary?")
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}

    def special_tokens_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """True at special tokens and padding: the positions never selected."""
        return self.is_special[input_ids] | (attention_mask == 0)

    def mask(self, input_ids, special_tokens_mask, generator=None):
        """Mask already padded ``input_ids`` (token-level or whole-word, as configured)."""
        kw = dict(mask_token_id=self.mask_token_id, vocab_size=self.vocab_size,
                  special_tokens_mask=special_tokens_mask, mlm_probability=self.mlm_probability,
                  generator=generator, random_token_ids=self.random_token_ids,
                  mask_replace_prob=self.mask_replace_prob, random_replace_prob=self.random_replace_prob)
        if self.whole_word:
            word_ids = word_ids_from_wordpieces(input_ids, self.is_continuation, special_tokens_mask)
            return whole_word_mask(input_ids, word_ids=word_ids, **kw)
        return mask_tokens(input_ids, **kw)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.pad(examples)
        special = self.special_tokens_mask(batch["input_ids"], batch["attention_mask"])
        if not self.static:
            inputs, labels = self.mask(batch["input_ids"], special, self._generator())
        else:
            if any("idx" not in ex for ex in examples):
                raise KeyError(
                    "static masking keys each example's fixed mask on example['idx']; add a unique "
                    "integer 'idx' to every example (e.g. {'idx': i, 'input_ids': ...}) or use static=False"
                )
            inputs, labels = batch["input_ids"].clone(), torch.empty_like(batch["input_ids"])
            for row, ex in enumerate(examples):  # one generator per example, not per token
                g = torch.Generator().manual_seed(_seed_for(self.seed, ex["idx"]))
                n = int(batch["attention_mask"][row].sum())
                x, y = self.mask(batch["input_ids"][row : row + 1, :n], special[row : row + 1, :n], g)
                inputs[row, :n], labels[row, :n] = x[0], y[0]
                labels[row, n:] = IGNORE_INDEX
        batch["input_ids"], batch["labels"] = inputs, labels
        if all("next_sentence_label" in ex for ex in examples):
            batch["next_sentence_label"] = torch.as_tensor(
                [int(ex["next_sentence_label"]) for ex in examples], dtype=torch.long)
        return batch


class MaskedBatches:
    """The pretraining stream: shuffled batches of pre-tokenized pairs
    (:class:`bertmini.nsp.PretrainingData`), masked afresh each time (dynamic masking),
    as dicts for ``model(**batch)``.

    The masking is :class:`MLMCollator`'s (the same selection, 80/10/10 and random-token
    ids); only the padding is already done. Re-iterable: every ``iter()`` is a new
    epoch. Shuffling and masking draw from the global torch random state, which
    :func:`bertmini.train.train` owns and saves, so a resumed run sees exactly the
    batches it would have. ``use_nsp=False`` leaves ``next_sentence_label`` out (MLM alone).
    ``mask_replace_prob`` / ``random_replace_prob`` change BERT's 80/10/10 (ELECTRA: 0.85 / 0).
    """

    def __init__(self, data, tokenizer, batch_size: int, *, mlm_probability: float = 0.15, use_nsp: bool = True,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1):
        if batch_size < 1 or batch_size > len(data):
            raise ValueError(f"batch_size={batch_size} must be between 1 and the {len(data)} examples")
        self.data, self.batch_size, self.use_nsp = data, batch_size, use_nsp
        self.collator = MLMCollator(tokenizer, mlm_probability, mask_replace_prob=mask_replace_prob,
                                    random_replace_prob=random_replace_prob)

    def __len__(self) -> int:
        return len(self.data) // self.batch_size  # the last partial batch is dropped

    def mask(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
             ) -> dict[str, torch.Tensor]:
        """``batch`` with ``input_ids`` masked and ``labels`` added (``special_tokens_mask`` consumed)."""
        batch = dict(batch)
        special = batch.pop("special_tokens_mask")
        batch["input_ids"], batch["labels"] = self.collator.mask(batch["input_ids"], special, generator)
        if not self.use_nsp:
            batch.pop("next_sentence_label")
        return batch

    def __iter__(self):
        order = torch.randperm(len(self.data))
        for k in range(len(self)):
            yield self.mask(self.data.batch(order[k * self.batch_size:(k + 1) * self.batch_size]))
