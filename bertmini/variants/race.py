"""The race of chapter 6a: BERT and its family pretrained on one budget, then fine-tuned alike.

Every arm gets chapter 4's training articles and vocabulary, the same optimizer steps, rows of
the same length per batch, the same schedule and seed (:class:`RaceRecipe`); only the model and
its pretraining task differ:

========================== ===========================================================
``bert``                   BERT (:class:`bertmini.heads.BertForPreTraining`): MLM + NSP, chapter 4's recipe
``roberta``                RoBERTa: MLM only, on contiguous packed text (:func:`pack_full_sentences`)
``albert``                 ALBERT, every layer shared, factorised embeddings: MLM + SOP
``albert_shared_attention`` ALBERT sharing only the attention: MLM + SOP
``electra``                ELECTRA: a 1/4-width generator and the discriminator (:class:`ElectraPretraining`)
``scratch``                the BERT encoder from random initialisation (no pretraining)
========================== ===========================================================

:func:`load_or_run_arm` trains an arm once and caches it (``<cache>/race/<arm>-<profile>-<path>``,
with resumable checkpoints while it trains, like :func:`bertmini.pretraining.load_or_pretrain`);
:func:`encoder_of` gives the encoder a task head goes on and :func:`finetune_accuracy` fine-tunes
it with the one recipe every arm shares.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runtime
from ..config import BertConfig
from ..heads import BertForPreTraining
from ..masking import MaskedBatches
from ..model import BertModel, BertPooler
from .albert import AlbertConfig, AlbertForPreTraining
from .electra import MASKING as ELECTRA_MASKING
from .electra import ElectraConfig, ElectraPretraining, generator_config
from .roberta import RobertaConfig, RobertaForMaskedLM, pack_full_sentences

ARMS = ("bert", "roberta", "albert", "albert_shared_attention", "electra", "scratch")
TRAINED_ARMS = ARMS[:-1]


@dataclass(frozen=True)
class RaceRecipe:
    """What every arm shares. ``albert_embedding_size`` is ALBERT's ``E``; ELECTRA's generator is
    ``electra_generator_fraction`` of the discriminator's width and its loss weight
    ``electra_disc_weight`` (the paper's 1/4 and 50)."""

    size: str = "tiny"
    max_length: int = 64
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    max_steps: int = 600
    weight_decay: float = 0.01
    eval_every: int = 100
    eval_pairs: int = 512
    albert_embedding_size: int = 64
    electra_generator_fraction: float = 0.25
    electra_disc_weight: float = 50.0
    amp: str | None = "auto"
    seed: int = 0

    def replace(self, **changes: Any) -> "RaceRecipe":
        return dataclasses.replace(self, **changes)


# Steps on each numeric path at the cpu profile: about five CPU minutes for the five trained arms
# together (2-core AMD EPYC, fp32: about 0.16 s a step for BERT, RoBERTa and ALBERT, 0.28 s for
# ELECTRA; native bf16 is faster, so it gets more steps for about the same minutes).
CPU_STEPS = {"bf16": 450, "fp16": 450, "fp32": 300}


def race_recipe(profile: str | None = None, **changes: Any) -> RaceRecipe:
    """The race's recipe at ``profile`` (default: the current one), with any field changed."""
    from ..train import numeric_path

    rcp = runtime.by_profile(
        cpu=RaceRecipe(max_steps=CPU_STEPS[numeric_path()]),
        gpu=RaceRecipe(size="mini", max_length=128, batch_size=128, warmup_steps=500, max_steps=5000,
                       eval_every=500, eval_pairs=2048, albert_embedding_size=128),
        profile_name=profile)
    return rcp.replace(**changes) if changes else rcp


# ----------------------------------------------------------------------------- the arms


def _check_arm(arm: str) -> None:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; the race has {ARMS}")


def arm_config(arm: str, rcp: RaceRecipe, vocab_size: int, size: str | None = None,
               max_position_embeddings: int | None = None) -> BertConfig:
    """The config of ``arm``'s encoder at ``size`` (default: the recipe's), all sharing BERT's sizes."""
    _check_arm(arm)
    size = size or rcp.size
    positions = max_position_embeddings or rcp.max_length
    common = dict(vocab_size=vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if arm in ("bert", "scratch"):
        return BertConfig.preset(size, max_position_embeddings=positions, **common)
    if arm == "roberta":  # positions start past the padding id (0 in the book's vocabulary)
        return RobertaConfig.preset(size, max_position_embeddings=positions + 1, pad_token_id=0, type_vocab_size=1,
                                    layer_norm_eps=1e-12, **common)
    if arm == "electra":
        hidden = BertConfig.preset(size).hidden_size
        return ElectraConfig.preset(size, max_position_embeddings=positions, embedding_size=hidden, **common)
    sharing = "all" if arm == "albert" else "attention"
    fields = {**BertConfig.preset(size).to_dict(), **common, "max_position_embeddings": positions,
              "embedding_size": rcp.albert_embedding_size, "hidden_act": "gelu"}
    fields = {k: v for k, v in fields.items() if k in {f.name for f in dataclasses.fields(AlbertConfig)}}
    return AlbertConfig.with_sharing(sharing, **fields)


def build_arm(arm: str, rcp: RaceRecipe, vocab_size: int) -> nn.Module:
    """A freshly initialised pretraining model for ``arm`` (seeded with ``rcp.seed``)."""
    config = arm_config(arm, rcp, vocab_size)
    runtime.seed_everything(rcp.seed)
    if arm in ("bert", "scratch"):
        return BertForPreTraining(config)
    if arm == "roberta":
        return RobertaForMaskedLM(config)
    if arm == "electra":
        return ElectraPretraining(config, generator_config(config, rcp.electra_generator_fraction),
                                  disc_weight=rcp.electra_disc_weight)
    return AlbertForPreTraining(config)


def encoder_of(arm: str, model: nn.Module) -> BertModel:
    """A copy of the encoder a task head goes on (``model`` is left as it is, so each task
    starts from the same pretrained weights). RoBERTa's and ELECTRA's pretraining models have
    no pooler (nothing trained one); their copy gets a freshly initialised one, as the
    ``transformers`` task heads of both build their own."""
    import copy

    _check_arm(arm)
    encoder = {"bert": lambda m: m.bert, "scratch": lambda m: m.bert, "roberta": lambda m: m.roberta,
               "albert": lambda m: m.albert, "albert_shared_attention": lambda m: m.albert,
               "electra": lambda m: m.discriminator.electra}[arm](model)
    encoder = copy.deepcopy(encoder)
    if encoder.pooler is None:
        runtime.seed_everything(0)
        encoder.pooler = BertPooler(encoder.config)
        encoder.pooler.apply(encoder._init_weights)
    return encoder


def mlm_model_of(arm: str, model: nn.Module) -> nn.Module | None:
    """The part of ``arm``'s model with a masked-LM head (ELECTRA: its generator); None for ``scratch``."""
    _check_arm(arm)
    return None if arm == "scratch" else model.generator if arm == "electra" else model


class _Renamed:
    """A batch stream with one key renamed (NSP's ``next_sentence_label`` -> ALBERT's ``sentence_order_label``)."""

    def __init__(self, stream, old: str, new: str):
        self.stream, self.old, self.new = stream, old, new

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self):
        for batch in self.stream:
            batch[self.new] = batch.pop(self.old)
            yield batch


def arm_stream(arm: str, rcp: RaceRecipe, tokenizer, docs: Sequence[Sequence[list[int]]]):
    """The pretraining batches of ``arm`` from the training articles ``docs`` (sentences of ids).

    BERT: NSP pairs, negatives from other articles (chapter 4); ALBERT: SOP pairs (two
    consecutive segments, swapped for the negative); RoBERTa and ELECTRA: contiguous text
    packed into full rows. Every arm: ``rcp.batch_size`` rows of up to ``rcp.max_length``
    tokens, masked afresh each batch (ELECTRA with its own 85/15 masking)."""
    from ..nsp import PretrainingData, make_nsp_pairs

    _check_arm(arm)
    if arm == "scratch":
        raise ValueError("the scratch arm is not pretrained: it has no batches")
    if arm in ("roberta", "electra"):
        data = pack_full_sentences(docs, tokenizer, rcp.max_length)
        masking = ELECTRA_MASKING if arm == "electra" else {}
        return MaskedBatches(data, tokenizer, rcp.batch_size, use_nsp=False, **masking)
    negatives = "other_article" if arm == "bert" else "same_article"
    pairs = [p for c in range(2) for p in make_nsp_pairs(docs, rcp.max_length, seed=rcp.seed + 1000 * c,
                                                           negatives=negatives)]
    stream = MaskedBatches(PretrainingData.from_pairs(pairs, tokenizer, rcp.max_length), tokenizer, rcp.batch_size)
    return stream if arm == "bert" else _Renamed(stream, "next_sentence_label", "sentence_order_label")


def eval_batches_for(arm: str, batches: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Chapter 4's held-out masked pairs as ``arm``'s MLM model reads them: RoBERTa has one token
    type (its rows are all type 0); ALBERT reads no NSP label."""
    out = []
    for b in batches:
        b = dict(b)
        if arm == "roberta":
            b["token_type_ids"] = torch.zeros_like(b["token_type_ids"])
        if arm != "bert":
            b.pop("next_sentence_label", None)
        out.append(b)
    return out


# ----------------------------------------------------------------------------- running and caching


@dataclass
class ArmRun:
    """One arm of the race: the trained model, its history and held-out results."""

    arm: str
    model: nn.Module
    history: Any
    results: dict[str, float]


def run_arm(arm: str, rcp: RaceRecipe, tokenizer, docs, eval_batches, *, progress: bool = True,
            checkpoint_dir: str | Path | None = None) -> ArmRun:
    """Pretrain ``arm`` as ``rcp`` says with :func:`bertmini.train.train`; ``eval_batches`` are
    chapter 4's held-out masked pairs (:func:`bertmini.pretraining.fixed_masked_batches`),
    scored every ``rcp.eval_every`` steps on ``rcp.eval_pairs`` of them and on all at the end."""
    from ..pretraining import evaluate
    from ..train import TrainConfig, train

    model = build_arm(arm, rcp, len(tokenizer))
    if arm == "scratch":
        return ArmRun(arm, model.eval(), None, {"steps": 0, "train_seconds": 0.0})
    batches = eval_batches_for(arm, eval_batches)
    n_eval = max(1, -(-rcp.eval_pairs // batches[0]["input_ids"].shape[0]))
    mlm = lambda m: mlm_model_of(arm, m)  # noqa: E731
    config = TrainConfig(lr=rcp.lr, weight_decay=rcp.weight_decay, warmup_steps=rcp.warmup_steps,
                         max_steps=rcp.max_steps, amp=rcp.amp, eval_every=rcp.eval_every, seed=rcp.seed,
                         progress=progress, desc=f"race: {arm}", checkpoint_dir=checkpoint_dir,
                         checkpoint_every=None if checkpoint_dir is None else 2 * rcp.eval_every)
    history = train(model, arm_stream(arm, rcp, tokenizer, docs), config,
                    eval_fn=lambda m: evaluate(mlm(m), batches[:n_eval]), resume=checkpoint_dir is not None)
    results = evaluate(mlm(model), batches)
    results.update(steps=len(history), train_seconds=history.elapsed,
                   seconds_per_step=history.elapsed / max(len(history), 1))
    return ArmRun(arm, model.eval(), history, results)


def arm_dir(arm: str) -> Path:
    """Where :func:`load_or_run_arm` keeps an arm: ``<cache>/race/<arm>-<profile>-<path>/``."""
    from ..train import numeric_path

    _check_arm(arm)
    return runtime.cache_dir() / "race" / f"{arm}-{runtime.profile()}-{numeric_path()}"


def load_or_run_arm(arm: str, rcp: RaceRecipe, tokenizer, docs, eval_batches, *, progress: bool = True,
                    retrain: bool = False) -> ArmRun:
    """:func:`run_arm`, cached: the first call trains and saves the arm (all or nothing), later
    calls load it (every file checked against its sha256; a damaged or stale cache, one saved
    with another recipe or vocabulary, is trained again). While it trains, checkpoints go to
    ``<arm_dir>.partial/``, so a run cut off part-way resumes there."""
    from ..checkpoint import checkpoint_files, load_checkpoint, write_files_atomically

    directory = arm_dir(arm)
    recipe = {**dataclasses.asdict(rcp), "vocab_size": len(tokenizer)}
    if arm == "scratch":
        return run_arm(arm, rcp, tokenizer, docs, eval_batches, progress=progress)
    if not retrain and (directory / "model.safetensors").is_file():
        model = build_arm(arm, rcp, len(tokenizer))
        try:
            state = load_checkpoint(directory, model)
            if state["extra"].get("recipe") == recipe:
                return ArmRun(arm, model.eval(), state["history"], dict(state["extra"]["results"]))
            if progress:
                print(f"{directory} was trained with another recipe; training {arm} again")
        except (OSError, ValueError) as e:
            if progress:
                print(f"could not load {directory} ({e}); training {arm} again")
    partial = directory.with_name(directory.name + ".partial")
    if retrain:
        shutil.rmtree(partial, ignore_errors=True)
    run = run_arm(arm, rcp, tokenizer, docs, eval_batches, progress=progress, checkpoint_dir=partial)
    files = checkpoint_files(run.model, step=len(run.history), history=run.history,
                             extra={"recipe": recipe, "results": run.results})
    write_files_atomically(directory, files)
    shutil.rmtree(partial, ignore_errors=True)
    return run


# ----------------------------------------------------------------------------- fine-tuning and counting


def finetune_accuracy(encoder: BertModel, tokenizer, train_set, test_set, num_labels: int, *,
                      max_length: int = 64, lr: float = 1e-3, epochs: int = 3, batch_size: int = 32,
                      desc: str = "fine-tune", progress: bool = True) -> float:
    """The one fine-tuning recipe of the race: a linear classifier on the pooled ``[CLS]``
    (:class:`bertmini.task_heads.BertForSequenceClassification`), every weight trained, seeded;
    test accuracy. ``train_set`` / ``test_set``: ``(text, label)`` pairs."""
    from ..finetuning import classification_scores, encode_classification, finetune
    from ..task_heads import BertForSequenceClassification

    def encode(rows):
        return encode_classification(tokenizer, [t for t, _ in rows], [y for _, y in rows],
                                     num_labels=num_labels, max_length=max_length)

    runtime.seed_everything(0)
    model = BertForSequenceClassification.from_encoder(encoder, num_labels=num_labels)
    finetune(model, encode(train_set), lr=lr, epochs=epochs, batch_size=batch_size, desc=desc, progress=progress)
    return classification_scores(model, encode(test_set))["accuracy"]


def frozen_accuracy(encoder: BertModel, tokenizer, train_set, test_set, num_labels: int, *,
                    max_length: int = 64, l2: float = 1e-3) -> float:
    """What pretraining put into the representation itself: the encoder frozen, each text the
    mean of its final token vectors (standardised with the training set's mean and spread), and
    a logistic regression (:class:`bertmini.baselines.LogisticRegression`) fitted on them; test
    accuracy. Cheap (one forward pass per text) and with no learning rate to get wrong."""
    from ..baselines import LogisticRegression, encode_features
    from ..finetuning import encode_classification
    from ..metrics import accuracy

    def features(rows):
        examples = encode_classification(tokenizer, [t for t, _ in rows], None, max_length=max_length)
        return encode_features(encoder, examples, pooling="mean")

    x_train, x_test = features(train_set), features(test_set)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    probe = LogisticRegression(x_train.shape[1], num_labels).fit((x_train - mean) / std,
                                                                 torch.tensor([y for _, y in train_set]), l2=l2)
    predicted = probe((x_test - mean) / std).argmax(-1).tolist()
    return accuracy(predicted, [y for _, y in test_set])


def encoder_parameters(arm: str, rcp: RaceRecipe, vocab_size: int, size: str | None = None) -> int:
    """Parameters of ``arm``'s encoder (embeddings, layers and pooler where it has one; no
    pretraining heads) at ``size``, with 512 positions at a named size; built on the ``meta``
    device, so even base size costs no memory."""
    from .albert import AlbertModel
    from .electra import ElectraModel
    from .roberta import RobertaModel

    config = arm_config(arm, rcp, vocab_size, size=size, max_position_embeddings=512 if size else None)
    cls = {"bert": BertModel, "scratch": BertModel, "roberta": RobertaModel, "albert": AlbertModel,
           "albert_shared_attention": AlbertModel, "electra": ElectraModel}[arm]
    with torch.device("meta"):
        model = cls(config)
    return model.num_parameters()  # each shared tensor once
