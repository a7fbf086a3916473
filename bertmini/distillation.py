"""Knowledge distillation (Hinton et al., 2015) as DistilBERT does it (Sanh et al., 2019).

A big fine-tuned **teacher** labels sentences with its whole output distribution; a small
**student** learns to give the same distribution, and the same hidden states:

    loss = alpha_soft * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))    soft targets
         + alpha_hard * CE(z_s, y)                                         the labels, where there are any
         + alpha_cos  * mean over real tokens of (1 - cos(h_s, h_t))       last hidden states

``T`` (the temperature) softens both distributions so the student sees how the teacher ranks
the wrong classes, not only which class wins; the soft term's gradient shrinks like ``1/T^2``,
so it is multiplied by ``T^2`` to weigh the same against the hard term at any ``T``.

The student is the teacher's own architecture with fewer layers, initialised from some of
the teacher's (:func:`student_from_teacher`: layers 0, 2 and 4 of six, DistilBERT's "one of
two"), so it is a :class:`~bertmini.task_heads.BertForSequenceClassification` that
``save_finetuned`` / ``load_finetuned`` and ``predict`` take as they are. The teacher runs
**once** over the transfer sentences (:func:`teacher_targets`); every student then trains on
those stored outputs with the book's fine-tuning recipe and loop
(:func:`bertmini.finetuning.finetune`, :func:`bertmini.train.train`): :func:`distil`.

:func:`quantize_int8` makes a trained model cheaper still for a CPU (int8 linear layers), and
:func:`time_inference` measures what each model costs per sentence.

Not handled: distilling the masked-LM pretraining itself (DistilBERT's general distillation, on
a corpus), a projection between hidden states of different widths (TinyBERT's), attention-map
losses, token or span heads, and two vocabularies of the same size with different pieces (only
the sizes are compared).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import runtime
from .checkpoint import load_state_dict_strict
from .config import IGNORE_INDEX
from .finetuning import Batches, collate, finetune, predict_logits
from .padding import pad_rows
from .task_heads import BertForSequenceClassification, TaskOutput


@dataclass(frozen=True)
class DistillationRecipe:
    """The loss weights, the temperature and the fine-tuning recipe of :func:`distil`."""

    temperature: float = 2.0
    alpha_soft: float = 1.0
    alpha_hard: float = 1.0
    alpha_cos: float = 1.0
    lr: float = 1e-4
    epochs: float = 3
    batch_size: int = 32
    amp: str | None = "auto"  # bf16 where the CPU or GPU has it natively (bertmini.train.resolve_amp)
    seed: int = 0

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature={t!r} must be a positive number: the logits are divided by it "
                             "(1 leaves them as they are, 2 to 4 soften them; DistilBERT uses 2)")
        weights = {n: getattr(self, n) for n in ("alpha_soft", "alpha_hard", "alpha_cos")}
        if any(not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 for w in weights.values()):
            raise ValueError(f"the loss weights must be numbers >= 0, got {weights}")
        if not any(weights.values()):
            raise ValueError("every loss weight is 0: nothing would be learned; set alpha_soft, alpha_hard or alpha_cos")

    def replace(self, **changes) -> "DistillationRecipe":
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------ the student
def student_from_teacher(teacher: BertForSequenceClassification, layers: Sequence[int] = (0, 2, 4)
                         ) -> BertForSequenceClassification:
    """A copy of ``teacher`` that keeps only the transformer layers ``layers`` (in that order),
    with the teacher's embeddings, pooler and classifier: DistilBERT's initialisation."""
    n = teacher.config.num_hidden_layers
    if len(layers) == 0:
        raise ValueError("layers is empty: name the teacher layers the student starts from, e.g. (0, 2, 4)")
    missing = [i for i in layers if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
    if missing:
        raise ValueError(f"the layer map names teacher layer(s) {missing}, but the teacher has {n} layers, "
                         f"numbered 0 to {n - 1}; pick from those, e.g. {tuple(range(0, n, 2))}")
    config = dataclasses.replace(teacher.config, num_hidden_layers=len(layers))
    student = BertForSequenceClassification(config, num_labels=teacher.num_labels)
    rename = {f"bert.encoder.layer.{t}.": f"bert.encoder.layer.{s}." for s, t in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        prefix = next((p for p in rename if key.startswith(p)), None)
        if prefix is not None:
            state[rename[prefix] + key[len(prefix):]] = value
        elif not key.startswith("bert.encoder.layer."):
            state[key] = value  # embeddings, pooler, classifier
    load_state_dict_strict(student, {k: v.clone() for k, v in state.items()}, source="teacher")
    return student.train(teacher.training)


# ------------------------------------------------------------------ the losses
def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the labelled rows (``labels != -100``); 0 for a batch with none."""
    labelled = labels != IGNORE_INDEX
    losses = F.cross_entropy(student_logits.float(), labels.clamp_min(0), reduction="none")
    return (losses * labelled).sum() / labelled.sum().clamp_min(1)


def hidden_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """``1 - cos(h_s, h_t)`` averaged over the real tokens: the directions of the two models'
    last hidden states aligned, token by token (DistilBERT's cosine embedding loss)."""
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    real = attention_mask.float()
    return ((1 - cos) * real).sum() / real.sum()


@dataclass
class DistillationOutput(TaskOutput):
    """A :class:`~bertmini.task_heads.TaskOutput` with the three parts of the loss (logged by ``train``)."""

    soft_loss: torch.Tensor | None = None
    hard_loss: torch.Tensor | None = None
    cos_loss: torch.Tensor | None = None


def distillation_loss(student_logits, teacher_logits, labels, student_hidden, teacher_hidden, attention_mask,
                      recipe: DistillationRecipe) -> DistillationOutput:
    """The weighted sum of the three losses (a part whose weight is 0 is not computed)."""
    out = DistillationOutput(loss=None, logits=student_logits)
    parts = []
    if recipe.alpha_soft:
        out.soft_loss = soft_target_loss(student_logits, teacher_logits, recipe.temperature)
        parts.append(recipe.alpha_soft * out.soft_loss)
    if recipe.alpha_hard:
        out.hard_loss = hard_label_loss(student_logits, labels)
        parts.append(recipe.alpha_hard * out.hard_loss)
    if recipe.alpha_cos:
        out.cos_loss = hidden_cosine_loss(student_hidden, teacher_hidden, attention_mask)
        parts.append(recipe.alpha_cos * out.cos_loss)
    out.loss = sum(parts)
    return out


class Distiller(nn.Module):
    """The student inside the training loop: ``forward(**batch)`` runs the student (keeping its
    last hidden states) and returns :func:`distillation_loss` against the teacher's stored outputs."""

    def __init__(self, student: BertForSequenceClassification, recipe: DistillationRecipe):
        super().__init__()
        self.student, self.recipe = student, recipe

    def forward(self, input_ids, attention_mask, teacher_logits, teacher_hidden, labels,
                token_type_ids=None) -> DistillationOutput:
        s = self.student
        encoded = s.bert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        logits = s.classifier(s.dropout(encoded.pooler_output))  # the student's own head, as its forward does
        return distillation_loss(logits, teacher_logits, labels, encoded.last_hidden_state, teacher_hidden,
                                 attention_mask, self.recipe)


# ------------------------------------------------------------------ the teacher, once
@dataclass
class TeacherTargets:
    """What the teacher said about each transfer example: ``logits`` (one ``(num_labels,)`` tensor
    each) and ``hidden`` (one ``(length, hidden_size)`` tensor each, stored in float16), with the
    teacher's ``vocab_size`` and ``hidden_size`` so a student can be checked against them."""

    logits: list[torch.Tensor]
    hidden: list[torch.Tensor]
    vocab_size: int
    hidden_size: int


def teacher_targets(teacher: BertForSequenceClassification, examples: Sequence[dict], batch_size: int = 64,
                    progress: bool = True) -> TeacherTargets:
    """Run ``teacher`` once over ``examples`` (eval mode, fp32, no gradients): its logits and last
    hidden states, in the order of ``examples``. The examples go through in order of length, so
    that a batch holds sentences of about one length and little padding is computed."""
    from tqdm.auto import tqdm

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    logits, hidden = [None] * len(examples), [None] * len(examples)
    with runtime.eval_mode(teacher):
        for start in tqdm(range(0, len(order), batch_size), desc="teacher outputs", disable=not progress,
                          mininterval=1.0):
            chunk = order[start:start + batch_size]
            batch = collate([{k: examples[i][k] for k in ("input_ids", "token_type_ids")} for i in chunk])
            encoded = teacher.bert(**batch)
            for i, z, h in zip(chunk, teacher.classifier(encoded.pooler_output), encoded.last_hidden_state):
                logits[i], hidden[i] = z.float(), h[:len(examples[i]["input_ids"])].half()
    return TeacherTargets(logits, hidden, teacher.config.vocab_size, teacher.config.hidden_size)


class DistillationBatches(Batches):
    """:class:`~bertmini.finetuning.Batches` of transfer examples with the teacher's outputs
    added to each batch: ``teacher_logits`` ``(batch, labels)`` and ``teacher_hidden``
    ``(batch, seq, hidden)``, padded as the ids are. Examples without a label get ``-100``."""

    def __init__(self, examples: Sequence[dict], targets: TeacherTargets, batch_size: int, pad_token_id: int = 0):
        if len(targets.logits) != len(examples):
            raise ValueError(f"{len(examples)} examples but teacher outputs for {len(targets.logits)}; "
                             "compute teacher_targets(teacher, examples) on these very examples")
        rows = [{**ex, "labels": ex.get("labels", IGNORE_INDEX), "index": i} for i, ex in enumerate(examples)]
        super().__init__(rows, batch_size, shuffle=True, pad_token_id=pad_token_id)
        self.targets = targets

    def collate_batch(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = super().collate_batch(examples)
        batch["teacher_logits"] = torch.stack([self.targets.logits[ex["index"]] for ex in examples])
        batch["teacher_hidden"] = pad_rows([self.targets.hidden[ex["index"]] for ex in examples], 0.0,
                                           dtype=torch.float32)
        return batch


def check_student(student: BertForSequenceClassification, targets: TeacherTargets,
                  recipe: DistillationRecipe) -> None:
    """The errors a student that cannot learn from this teacher would otherwise hit deep inside a loss."""
    config = student.config
    if config.vocab_size != targets.vocab_size:
        raise ValueError(f"the teacher's vocabulary has {targets.vocab_size} pieces, the student's "
                         f"{config.vocab_size}: the student reads the transfer sentences as the teacher's tokenizer "
                         f"encoded them, so build it with the teacher's vocabulary (vocab_size={targets.vocab_size}, "
                         "the teacher's tokenizer)")
    if recipe.alpha_cos and config.hidden_size != targets.hidden_size:
        raise ValueError(f"the cosine loss compares hidden states, but the student is {config.hidden_size} wide and "
                         f"the teacher {targets.hidden_size}; set alpha_cos=0 (soft targets and labels need no "
                         "common width) or give the student the teacher's hidden_size")


def distil(student: BertForSequenceClassification, examples: Sequence[dict], targets: TeacherTargets,
           recipe: DistillationRecipe = DistillationRecipe(), *, desc: str = "distil", progress: bool = True):
    """Train ``student`` in place on the transfer ``examples`` (labelled or not) against the
    teacher's stored ``targets``, with :func:`bertmini.finetuning.finetune` (the BERT recipe:
    AdamW, warmup, linear decay, batch ``recipe.batch_size``); returns the ``History``."""
    check_student(student, targets, recipe)
    data = DistillationBatches(examples, targets, recipe.batch_size)
    return finetune(Distiller(student, recipe), data, lr=recipe.lr, epochs=recipe.epochs,
                    batch_size=recipe.batch_size, amp=recipe.amp, seed=recipe.seed, desc=desc, progress=progress)


# ------------------------------------------------------------------ cheaper still, and what it costs
def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers hold int8 weights and quantise their input on
    the fly (PyTorch's dynamic quantisation), in eval mode; for CPU inference only. torch marks
    ``torch.ao.quantization`` as deprecated (its replacement is ``torchao``'s ``quantize_`` with
    ``Int8DynamicActivationInt8WeightConfig``); the warnings are silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear},
                                                      dtype=torch.qint8)


def time_inference(models: dict[str, nn.Module], examples: Sequence[dict], batch_size: int = 32,
                   repeats: int = 3) -> dict[str, float]:
    """Seconds per sentence of each model over ``examples`` (``predict_logits`` at ``batch_size``:
    padding, the forward pass, eval mode): the median of ``repeats`` passes, the models taking
    turns within each repeat so that a change in the machine's load hits all of them alike."""
    for model in models.values():  # warm-up: the first call of a shape pays for allocations
        predict_logits(model, examples[:batch_size], batch_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(repeats):
        names = list(models) if r % 2 == 0 else list(models)[::-1]
        for name in names:
            t0 = time.perf_counter()
            predict_logits(models[name], examples, batch_size)
            times[name].append((time.perf_counter() - t0) / len(examples))
    return {name: statistics.median(ts) for name, ts in times.items()}
