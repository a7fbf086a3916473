"""Pretraining the book's BERT: the recipe, the run, the evaluation, the cached model (chapter 4).

* :class:`Recipe` / :func:`recipe`: one pretraining run, all its sizes and rates in one place;
* :func:`pretrain` runs it with :func:`bertmini.train.train` on the NSP pairs of
  :mod:`bertmini.nsp`, masked afresh per batch by :class:`bertmini.masking.MaskedBatches`;
* :func:`evaluate` (masked-token accuracy, MLM loss, NSP accuracy) on
  :func:`fixed_masked_batches` (held-out pairs with one fixed mask);
* :func:`load_or_pretrain` returns the book's pretrained model from the cache, training
  it the first time. What the model learned is probed in :mod:`bertmini.probes`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import runtime
from .runtime import eval_mode
from .config import BertConfig
from .heads import BertForPreTraining
from .masking import MaskedBatches
from .nsp import PretrainingData, pretraining_data

# ----------------------------------------------------------------------------- evaluation


def fixed_masked_batches(data: PretrainingData, tokenizer, batch_size: int = 256, seed: int = 1234,
                         mlm_probability: float = 0.15) -> list[dict[str, torch.Tensor]]:
    """Held-out batches masked once with a fixed seed, so every evaluation scores the same blanks."""
    stream = MaskedBatches(data, tokenizer, min(batch_size, len(data)), mlm_probability=mlm_probability)
    g = torch.Generator().manual_seed(seed)
    return [stream.mask(data.batch(torch.arange(i, min(i + batch_size, len(data)))), g)
            for i in range(0, len(data), batch_size)]


def evaluate(model, batches: Sequence[dict[str, torch.Tensor]], amp: str | bool | None = "auto"
             ) -> dict[str, float]:
    """``mlm_accuracy`` (top-1 at the masked positions), ``mlm_loss`` and, if the batches
    carry NSP labels, ``nsp_accuracy``, over ``batches`` (e.g. :func:`fixed_masked_batches`).

    ``amp`` picks the numeric path as training does (:func:`bertmini.train.resolve_amp`:
    ``"auto"`` is bf16 only where it is native, so a CPU without bf16 evaluates in fp32
    instead of emulating bf16 several times slower); ``False``/``None`` is fp32."""
    from .train import resolve_amp

    device = next(model.parameters()).device
    correct = total = nsp_correct = nsp_total = 0
    loss_sum = 0.0
    dtype = resolve_amp("auto" if amp is True else (amp or None), device)
    ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    has_nsp = hasattr(model, "cls") and hasattr(model.cls, "seq_relationship")
    with eval_mode(model), ctx:
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
    result = {"mlm_accuracy": correct / max(total, 1), "mlm_loss": loss_sum / max(total, 1)}
    if nsp_total:
        result["nsp_accuracy"] = nsp_correct / nsp_total
    return result


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
    # 1e-3, not higher: at 2e-3 the tiny model can sit on the unigram plateau (NSP at
    # chance) for thousands of steps, at a point that tiny numeric differences move.
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


# The cpu profile's steps on each numeric path. A step costs about twice as much in fp32 as
# in native bf16 (2-core AMD EPYC: 0.12 s against 0.06), so a CPU without native bf16 (most
# laptops) gets fewer steps for about the same minutes; every claim of chapter 4 holds on both.
CPU_STEPS = {"bf16": 4800, "fp16": 4800, "fp32": 3400}


def _recipes(profile: str | None) -> dict[str, Recipe]:
    from .train import numeric_path

    # The book's model: BERT's architecture at Google's "tiny" size (2 layers x 128),
    # 64-token pairs, as many optimizer steps as a few CPU minutes allow on this
    # machine's numeric path (CPU_STEPS).
    book = runtime.by_profile(
        cpu=Recipe(max_steps=CPU_STEPS[numeric_path()]),
        gpu=Recipe(size="mini", max_length=128, copies=5, batch_size=128, lr=1e-3, warmup_steps=1000,
                   max_steps=20_000, dropout=0.1, eval_every=500, eval_pairs=4096),
        profile_name=profile)
    return {
        "book": book,
        # A few seconds, for tests and smoke runs; learns next to nothing.
        "smoke": Recipe(copies=1, batch_size=16, max_steps=20, warmup_steps=5, eval_every=10, eval_pairs=64),
    }


def recipe(preset: str = "book", profile: str | None = None, **changes: Any) -> Recipe:
    """The recipe called ``preset`` (``"book"``: the book's model; ``"smoke"``: a few
    seconds) at ``profile`` (default: the current one), with any field changed:
    ``recipe("book", use_nsp=False)``, ``recipe("book", profile="gpu")``."""
    presets = _recipes(profile)
    if preset not in presets:
        raise ValueError(f"unknown pretraining preset {preset!r}; choose one of {sorted(presets)}")
    return presets[preset].replace(**changes) if changes else presets[preset]


@dataclass
class PretrainRun:
    """What :func:`pretrain` returns: the trained model and how it got there."""

    model: BertForPreTraining
    tokenizer: Any
    history: Any  # bertmini.history.History
    recipe: Recipe
    results: dict[str, float]


def pretrain(rcp: Recipe | str = "book", *, tokenizer=None, train_data: PretrainingData | None = None,
             eval_batches: Sequence[dict[str, torch.Tensor]] | None = None, progress: bool = True,
             desc: str = "pretrain", checkpoint_dir: str | Path | None = None,
             checkpoint_every: int | None = None) -> PretrainRun:
    """Pretrain a fresh :class:`BertForPreTraining` as ``rcp`` says, with :func:`bertmini.train.train`.

    ``tokenizer`` defaults to the chapter-1 vocabulary (``load_or_train_vocab(8000)``);
    ``train_data`` to the NSP pairs of the training articles and ``eval_batches`` to
    the held-out (validation) articles with a fixed mask; pass them to reuse them
    across runs. Held-out MLM accuracy (and NSP accuracy) is measured every
    ``rcp.eval_every`` steps on ``rcp.eval_pairs`` pairs, and on all of them at the end
    (``results``). Deterministic for a given recipe.

    With ``checkpoint_dir`` the run saves a checkpoint there every ``checkpoint_every``
    steps (default: every ``2 * rcp.eval_every``) and first resumes from the newest one it
    finds, so a run killed part-way (a timeout, a restarted kernel) continues where it
    stopped and ends with the same weights as an uninterrupted one.
    """
    from .train import TrainConfig, train
    from .vocab import load_or_train_vocab

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
                         progress=progress, desc=desc, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=None if checkpoint_dir is None else checkpoint_every or 2 * rcp.eval_every)
    stream = MaskedBatches(train_data, tokenizer, rcp.batch_size, mlm_probability=rcp.mlm_probability,
                           use_nsp=rcp.use_nsp)
    history = train(model, stream, config, eval_fn=lambda m: evaluate(m, eval_batches[:n_eval]),
                    resume=checkpoint_dir is not None)
    results = evaluate(model, eval_batches)
    results["train_seconds"] = history.elapsed
    results["steps"] = len(history)
    return PretrainRun(model.eval(), tokenizer, history, rcp, results)


def pretrained_dir(preset: str = "book") -> Path:
    """Where :func:`load_or_pretrain` keeps a preset: ``<cache>/pretrained/<preset>-<profile>-<path>/``
    (the numeric path, ``fp32``, ``bf16`` or ``fp16``: the recipe and the trajectory depend on it)."""
    from .train import numeric_path

    name = f"{runtime.cache_name(preset, 'preset')}-{runtime.profile()}-{numeric_path()}"
    return runtime.cache_dir() / "pretrained" / name


def save_pretrained(run: PretrainRun, directory: str | Path) -> Path:
    """Save a run as a directory: ``model.safetensors`` (+ training state with the history,
    as :func:`bertmini.checkpoint.save_checkpoint` writes it), ``config.json``, ``vocab.txt``,
    ``recipe.json``, all or nothing (:func:`bertmini.checkpoint.write_files_atomically`);
    other files in ``directory`` are left alone. ``bertmini.hf.load_pretrained(directory)``
    reads its encoder."""
    from .checkpoint import checkpoint_files, config_and_vocab_files, write_files_atomically

    recipe = dataclasses.asdict(run.recipe)
    files = checkpoint_files(run.model, step=len(run.history), history=run.history,
                             extra={"recipe": recipe, "results": dict(run.results)})
    files.update(config_and_vocab_files(run.model.config, run.tokenizer))
    files["recipe.json"] = json.dumps(recipe, indent=1).encode()
    return write_files_atomically(directory, files)


def load_saved(directory: str | Path) -> tuple[BertForPreTraining, Any, Any, dict[str, float]]:
    """Read a directory written by :func:`save_pretrained`: ``(model, tokenizer, history, results)``.
    Every file is checked against the sha256 saved with it; a damaged one is named, never loaded."""
    from .checkpoint import load_checkpoint, read_config_and_vocab, read_files

    directory = Path(directory)
    files = read_files(directory, ["config.json", "vocab.txt"],
                       hint="; train one with load_or_pretrain() or save_pretrained()")
    config, tokenizer = read_config_and_vocab(files, directory)
    model = BertForPreTraining(config)
    state = load_checkpoint(directory, model)
    return model.eval(), tokenizer, state["history"], dict(state["extra"].get("results", {}))


def load_or_pretrain(preset: str = "book", *, progress: bool = True, retrain: bool = False
                     ) -> tuple[BertForPreTraining, Any]:
    """The book's pretrained model and its tokenizer: ``model, tokenizer = load_or_pretrain()``.

    Loads ``pretrained_dir(preset)`` if it holds a model, else pretrains it with
    :func:`pretrain` (deterministic; at the cpu profile five to seven minutes on two
    cores, with a progress bar) and saves it there first. ``retrain=True`` trains
    again even if a model is cached. The model is a :class:`BertForPreTraining` in
    eval mode; ``model.bert`` is the encoder for fine-tuning. The history and
    held-out results of the run are in :func:`load_pretraining_history`.

    While it trains, checkpoints go to ``<pretrained_dir>.partial/`` (:func:`pretrain`'s
    ``checkpoint_dir``): a call interrupted part-way (a cell's time limit, a restarted
    kernel) resumes there on the next call instead of starting again; the folder is
    removed once the model is saved.
    """
    directory = pretrained_dir(preset)
    if not retrain and (directory / "config.json").is_file():
        try:
            model, tokenizer, _, _ = load_saved(directory)
            return model, tokenizer
        except (OSError, ValueError) as e:  # a damaged cache: train again
            if progress:
                print(f"could not load {directory} ({e}); pretraining again")
    partial = directory.with_name(directory.name + ".partial")
    if retrain:
        shutil.rmtree(partial, ignore_errors=True)
    run = pretrain(preset, progress=progress, desc=f"pretrain {preset}", checkpoint_dir=partial)
    save_pretrained(run, directory)
    shutil.rmtree(partial, ignore_errors=True)
    return run.model, run.tokenizer


def load_pretraining_history(preset: str = "book") -> tuple[Any, dict[str, float]]:
    """``(history, results)`` of the cached run of ``preset`` (train it first with :func:`load_or_pretrain`)."""
    _, _, history, results = load_saved(pretrained_dir(preset))
    return history, results
