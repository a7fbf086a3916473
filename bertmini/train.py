"""One training loop for the whole book: pretraining (chapter 4) and fine-tuning (chapter 5).

::

    from bertmini.train import TrainConfig, train
    history = train(model, loader, TrainConfig(lr=1e-3, max_steps=500, eval_every=100),
                    eval_fn=lambda m: {"accuracy": accuracy(m)})
    plt.plot(history.steps, history.losses)

What one optimizer step does (the recipe of the BERT paper, as ``transformers`` runs it):

1. ``grad_accum_steps`` micro-batches, each ``model(**batch)`` under autocast; its
   ``.loss`` divided by ``grad_accum_steps`` and back-propagated;
2. the gradient norm clipped to ``max_grad_norm``;
3. an AdamW step, with no weight decay on biases and LayerNorm weights
   (:func:`optimizer_param_groups`);
4. the learning rate moved along linear warmup then linear decay (:func:`linear_warmup_decay`).

Around it: a tqdm bar, ``eval_fn`` every ``eval_every`` steps, a :class:`History`
for plots, checkpoints (safetensors, written atomically, never pickles), exact
resume, a wall-clock budget, and data parallelism when launched by ``torchrun``.

**Data.** ``train_data`` is anything iterated once per epoch: a ``DataLoader``, a
list of batches, or a zero-argument callable that returns a fresh iterator of
batches per epoch. A batch is a dict of tensors (and maybe other values), passed
as ``model(**batch)``. The stream runs across epoch boundaries (an accumulated
step may span two epochs) until ``max_steps`` optimizer steps are done.
The data are drawn under their *own* random state (seeded from ``seed``), so the
shuffle order and any random masking in a collator depend only on the seed and
the position in the stream: not on dropout, not on ``eval_fn``, not on a
restart. That is what makes resume exact.

**Data parallel.** Under ``torchrun`` every process seeds alike, reads the same stream and
keeps its own contiguous slice of every batch (so a global batch of 32 on two
processes is 16 + 16); DDP averages the gradients, which equals the one-process
gradient when the loss is a mean over examples and the batch splits evenly. A
``DataLoader`` with a ``DistributedSampler`` is left unsliced (it shards
already) and gets ``set_epoch`` called. Only rank 0 shows progress, evaluates
and writes checkpoints; the history's losses are averaged over processes.

Under DDP the model's output must be a dataclass, dict or tuple (DDP searches it
for the tensors the loss used). A loss averaged over *tokens* (MLM) weighs the
two halves by their own token counts, so DDP's mean of the halves is close to,
not equal to, the one-process loss. ``nccl`` on GPUs follows the same code path
as ``gloo`` but is tested only on the CPU here.

Not handled: ``torch.compile``-d models in checkpoints (save ``model._orig_mod``),
model parallelism, schedules other than linear, iterable data whose length is
unknown together with ``epochs`` (give ``max_steps``), and collators that draw
random numbers on the GPU (the data's own random state covers the CPU generators
of torch, Python and NumPy), and ``DataLoader(persistent_workers=True)`` (its
workers carry their random state from epoch to epoch, where a resume cannot reach
it; ordinary ``num_workers > 0`` resumes exactly).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from tqdm.auto import tqdm

from bertmini import runtime

__all__ = [
    "TrainConfig",
    "History",
    "train",
    "optimizer_param_groups",
    "make_optimizer",
    "linear_warmup_decay",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_amp",
    "CheckpointMismatchError",
]

AMP_CHOICES = ("auto", "bf16", "fp16", None)
CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"
LAST = "last"  # train() keeps the latest checkpoint in <checkpoint_dir>/last
# the TrainConfig fields a resumed run must share with the saved one to retrace it exactly
TRAJECTORY_FIELDS = ("lr", "weight_decay", "warmup_ratio", "warmup_steps", "max_steps", "epochs",
                     "grad_accum_steps", "max_grad_norm", "amp", "seed")


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Everything :func:`train` needs besides the model and the data.

    Give the length as ``max_steps`` (optimizer steps) or ``epochs`` (needs
    ``len(train_data)``); warmup as ``warmup_ratio`` of the steps or an absolute
    ``warmup_steps`` (which wins). ``amp``: ``"auto"`` picks bf16 on CUDA (fp16 on
    GPUs without bf16) and on CPUs with native bf16 instructions, where bf16
    autocast measured faster (see :func:`resolve_amp`); ``None`` is fp32.
    ``max_grad_norm=None`` disables clipping. ``max_time_s`` is a wall-clock budget
    for one call of :func:`train`: when spent, the loop stops after the current
    step, evaluates, saves and records ``history.stop_reason = "max_time_s"``.
    """

    lr: float
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    max_steps: int | None = None
    epochs: float | None = None
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    amp: str | None = "auto"
    eval_every: int | None = None
    log_every: int = 10
    max_time_s: float | None = None
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    seed: int = 0
    progress: bool = True
    device: str | torch.device | None = None
    desc: str = "train"

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_none: bool) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")

        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if self.max_steps is None and self.epochs is None:
            raise ValueError("TrainConfig needs a length: set max_steps=... (optimizer steps) or epochs=...")
        positive_int("max_steps", True)
        positive_int("grad_accum_steps", False)
        positive_int("log_every", False)
        positive_int("eval_every", True)
        positive_int("checkpoint_every", True)
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"TrainConfig.epochs must be > 0, got {self.epochs!r}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"TrainConfig.warmup_ratio must be in [0, 1], got {self.warmup_ratio!r}")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise ValueError(f"TrainConfig.warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"TrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"TrainConfig.amp must be one of {AMP_CHOICES}, got {self.amp!r}")
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("TrainConfig.checkpoint_every needs checkpoint_dir=... (where to write them)")
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"TrainConfig.max_time_s must be > 0 or None, got {self.max_time_s!r}")

    def total_steps(self, train_data: Any = None) -> int:
        """Optimizer steps this config trains for (``max_steps``, or ``epochs`` worth of batches)."""
        if self.max_steps is not None:
            return self.max_steps
        try:
            n_batches = len(train_data)
        except TypeError:
            raise TypeError(
                "TrainConfig(epochs=...) needs len(train_data); this train_data has no length. "
                "Give max_steps=... instead."
            ) from None
        return max(1, int(self.epochs * n_batches) // self.grad_accum_steps)

    def warmup(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        return int(round(self.warmup_ratio * total_steps))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        d["device"] = None if self.device is None else str(self.device)
        return d


# --------------------------------------------------------------------------- history


@dataclass
class History:
    """What a run did, for plots and for the checkpoint.

    ``records``: one dict per optimizer step with ``step, loss, lr, grad_norm,
    tokens, tokens_per_s, elapsed`` and any other scalar ``*loss*`` /
    ``*accuracy*`` the model's output carried (``mlm_loss``, ``nsp_accuracy``...).
    ``tokens`` counts ``attention_mask`` ones (else ``input_ids`` elements, else
    examples); ``tokens_per_s`` is measured over the ``log_every`` window the step
    belongs to. ``evals``: one dict per evaluation, ``step, elapsed`` and what
    ``eval_fn`` returned. ``elapsed`` is training wall-clock seconds, summed over resumes.
    """

    records: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def steps(self) -> list[int]:
        return [int(r["step"]) for r in self.records]

    @property
    def losses(self) -> list[float]:
        return [r["loss"] for r in self.records]

    @property
    def lrs(self) -> list[float]:
        return [r["lr"] for r in self.records]

    @property
    def elapsed(self) -> float:
        """Training seconds so far (0 before the first step)."""
        return self.records[-1]["elapsed"] if self.records else 0.0

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one per-step quantity, e.g. ``history.series("mlm_loss")``."""
        pairs = [(int(r["step"]), r[key]) for r in self.records if key in r]
        if not pairs:
            known = sorted({k for r in self.records for k in r})
            raise KeyError(f"no per-step {key!r} in this history; recorded: {known}")
        return [s for s, _ in pairs], [v for _, v in pairs]

    def eval_series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one evaluation metric, e.g. ``history.eval_series("accuracy")``."""
        pairs = [(int(e["step"]), e[key]) for e in self.evals if key in e]
        if not pairs:
            known = sorted({k for e in self.evals for k in e})
            raise KeyError(f"no eval metric {key!r} in this history; recorded: {known}")
        return [s for s, _ in pairs], [v for _, v in pairs]

    def smoothed(self, key: str = "loss", window: int = 20) -> tuple[list[int], list[float]]:
        """A trailing moving average of ``key``: per-step losses are noisy."""
        steps, values = self.series(key)
        out, acc = [], 0.0
        for i, v in enumerate(values):
            acc += v
            if i >= window:
                acc -= values[i - window]
            out.append(acc / min(i + 1, window))
        return steps, out

    def to_dict(self) -> dict[str, Any]:
        return {"records": list(self.records), "evals": list(self.evals), "stop_reason": self.stop_reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        return cls(list(d.get("records", [])), list(d.get("evals", [])), d.get("stop_reason"))

    def __len__(self) -> int:
        return len(self.records)

    def plot(self, key: str = "loss", ax: Any = None, window: int = 1, title: str | None = None) -> Any:
        """A quick line plot of a per-step quantity (``window > 1`` smooths it); returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        steps, values = self.smoothed(key, window) if window > 1 else self.series(key)
        ax.plot(steps, values, label=key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.set_title(title or f"{key} during training")
        return ax


# --------------------------------------------------------------------------- optimizer and schedule


def _no_decay_names(model: nn.Module) -> set[str]:
    """Parameter names that get no weight decay: every bias and every normalisation weight."""
    names = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)) or (
            "norm" in type(module).__name__.lower()
        )
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if is_norm or param_name == "bias":
                names.add(full)
    return names


def optimizer_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: ``weight_decay`` on weight matrices and embeddings, 0 on
    biases and LayerNorm weights (decaying a LayerNorm gain toward 0 only hurts).

    Frozen parameters (``requires_grad=False``) are left out; a tied parameter
    (the MLM decoder shares the word embeddings) appears once, by its first name.
    """
    no_decay = _no_decay_names(model)
    decay, plain = [], []
    for name, p in model.named_parameters():  # named_parameters() yields a tied tensor once
        if not p.requires_grad:
            continue
        (plain if name in no_decay else decay).append(p)
    if not decay and not plain:
        raise ValueError(
            "the model has no trainable parameters (all have requires_grad=False); "
            "unfreeze some, e.g. the task head, before training"
        )
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over :func:`optimizer_param_groups` (betas 0.9/0.999, eps 1e-8, as ``transformers``)."""
    return torch.optim.AdamW(optimizer_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999), eps=1e-8)


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The BERT schedule: the lr rises linearly from 0 over ``warmup_steps``, then falls
    linearly to 0 at ``total_steps``. Same factors as ``transformers.get_linear_schedule_with_warmup``."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps} and {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- mixed precision


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (``None``: plain fp32).

    ``"auto"``: bf16 on CUDA if the GPU supports it, else fp16 (with a gradient
    scaler); on a CPU, bf16 only when it has native bf16 instructions
    (AVX512-BF16 or AMX), because elsewhere bf16 matmuls are emulated and slower
    than fp32. Measured on the book's 2-core AMD EPYC (AVX512-BF16, no AMX), one
    ``BertForPreTraining`` training step, vocab 8,000, batch 32, median of 6 steps,
    twice each, alternating: the ``tiny`` preset (2 x 128, seq 64) trains 1.5x
    faster under bf16 autocast (~25k vs ~16k tokens/s), ``mini`` (4 x 256, seq 128)
    1.8x (~6.3k vs ~3.5k tokens/s). For toy models (width 32) the casts cost more
    than they save: pass ``amp=None``. MPS: fp32.
    """
    if amp is None:
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp != "auto":
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return None


def _cpu_has_native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))
    except Exception:  # private helpers: never let a probe break training
        return False


# --------------------------------------------------------------------------- random state


def _rng_state(cuda: bool = False) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seeded_rng_state(seed: int) -> dict[str, Any]:
    """The CPU random state ``runtime.seed_everything(seed)`` would leave, without touching the current one."""
    saved = _rng_state(cuda=True)  # torch.manual_seed reseeds CUDA too
    runtime.seed_everything(seed)
    state = _rng_state()
    _set_rng_state(saved)
    return state


def _rng_to_tree(state: Mapping[str, Any]) -> dict[str, Any]:
    """Random states as JSON + tensors (python's tuple state and numpy's array made explicit)."""
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    tree = {
        "torch": state["torch"],
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if "cuda" in state:
        tree["cuda"] = list(state["cuda"])
    return tree


def _rng_from_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    py, npy = tree["python"], tree["numpy"]
    state = {
        "torch": tree["torch"].to(torch.uint8),
        "python": (py["version"], tuple(py["internal"]), py["gauss_next"]),
        "numpy": (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                  npy["cached_gaussian"]),
    }
    if "cuda" in tree:
        state["cuda"] = [t.to(torch.uint8) for t in tree["cuda"]]
    return state


# --------------------------------------------------------------------------- checkpoints


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model it is loaded into."""


def _split_tensors(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``, collecting it in ``tensors``."""
    if isinstance(tree, torch.Tensor):
        key = prefix.rstrip(".")
        tensors[key] = tree.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(tree, Mapping):
        return {str(k): _split_tensors(v, f"{prefix}{k}.", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split_tensors(v, f"{prefix}{i}.", tensors) for i, v in enumerate(tree)]
    if isinstance(tree, (np.floating, np.integer)):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(
        f"cannot store {type(tree).__name__} at {prefix.rstrip('.') or 'top level'} in a checkpoint: "
        "only tensors, numbers, strings, None, lists and dicts are saved (no pickles)"
    )


def _join_tensors(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(tree, Mapping):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join_tensors(v, tensors) for v in tree]
    return tree


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _alias_groups(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``{duplicate_name: kept_name}`` for tensors that share memory (tied weights)."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for name, t in state.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases


def _model_file_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    state = _unwrap(model).state_dict()
    aliases = _alias_groups(state)
    # safetensors refuses two names for one tensor: store the tied weight once, record the alias.
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in aliases}
    return st_save(tensors, metadata={**metadata, "aliases": json.dumps(aliases)})


def _atomic_dir(path: Path) -> contextlib.AbstractContextManager[Path]:
    """Write a checkpoint into a fresh temporary sibling directory, then swap it in with renames."""

    @contextlib.contextmanager
    def manager():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            yield tmp
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}-{time.time_ns()}"
                os.replace(path, old)
            os.replace(tmp, path)  # a rename: readers see the old checkpoint or the new one, never half
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return manager()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    step: int = 0,
    history: History | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a checkpoint *directory* ``path``, with no pickles:

    - ``model.safetensors``: the weights (a tied weight stored once, its other names
      recorded in the metadata), loadable on its own with ``safetensors``;
    - ``training_state.safetensors`` + ``training_state.json``: step, optimizer and
      scheduler state, the random state of every generator, the history, and
      ``extra`` (a dict of numbers, strings, lists, dicts and tensors; tensors go to
      the safetensors file, the rest to JSON).

    The directory is written beside ``path`` and renamed into place, so a crash
    leaves the previous checkpoint (or none), never a mix. Returns ``path``.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "optimizer": None if optimizer is None else _split_tensors(optimizer.state_dict(), "optimizer.", tensors),
        "scheduler": None if scheduler is None else _split_tensors(scheduler.state_dict(), "scheduler.", tensors),
        "rng": _split_tensors(_rng_to_tree(_rng_state(cuda=True)), "rng.", tensors),
        "history": None if history is None else history.to_dict(),
        "extra": _split_tensors(dict(extra or {}), "extra.", tensors),
    }
    with _atomic_dir(path) as tmp:
        (tmp / MODEL_FILE).write_bytes(_model_file_bytes(model, {"format": "pt", "step": str(int(step))}))
        (tmp / STATE_TENSORS_FILE).write_bytes(st_save(tensors, metadata={"format": "pt"}))
        (tmp / STATE_JSON_FILE).write_text(json.dumps(state, indent=1, allow_nan=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    return path


def _check_model_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor], aliases: Mapping[str, str],
                         path: Path) -> dict[str, torch.Tensor]:
    target = _unwrap(model).state_dict()
    target_aliases = _alias_groups(target)
    full = dict(tensors)
    for dup, kept in aliases.items():
        if kept in full:
            full[dup] = full[kept]
    missing = [k for k in target if k not in full and not (k in target_aliases and target_aliases[k] in full)]
    unexpected = [k for k in full if k not in target]
    wrong = [f"{k}: checkpoint {tuple(full[k].shape)} vs model {tuple(target[k].shape)}"
             for k in full if k in target and full[k].shape != target[k].shape]
    if missing or unexpected or wrong:

        def listing(title: str, items: list[str]) -> str:
            shown = "\n    ".join(items[:12]) + (f"\n    ... and {len(items) - 12} more" if len(items) > 12 else "")
            return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""

        raise CheckpointMismatchError(
            f"the checkpoint {path} does not fit this {type(_unwrap(model)).__name__}:"
            + listing("missing from the checkpoint", missing)
            + listing("in the checkpoint but not in the model", unexpected)
            + listing("shape mismatches", wrong)
            + "\nBuild the model with the configuration the checkpoint was saved with "
            "(same class, sizes and vocabulary), or load only matching tensors yourself."
        )
    for k in missing:  # tied in the model: filled through the tensor it shares memory with
        full[k] = full[target_aliases[k]]
    return {k: v for k, v in full.items() if k in target}


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Load a directory written by :func:`save_checkpoint` into ``model`` (and the
    optimizer and scheduler if given); a ``train()`` ``checkpoint_dir`` means its
    latest checkpoint, ``<checkpoint_dir>/last``. Keys or shapes that do not match raise
    :class:`CheckpointMismatchError` naming them, before anything is changed.

    Returns ``{"step", "history" (a History or None), "extra", "rng"}``; the global
    random state is *not* restored here (``train(resume=True)`` does that).
    """
    path = Path(path)
    if not (path / MODEL_FILE).is_file() and (path / LAST / MODEL_FILE).is_file():
        path = path / LAST  # a train() checkpoint_dir: its latest checkpoint
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: {MODEL_FILE} is missing (give the directory "
                                "save_checkpoint wrote, or a train() checkpoint_dir)")
    with safe_open(str(model_file), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        stored = {k: f.get_tensor(k) for k in f.keys()}
    weights = _check_model_tensors(model, stored, aliases, path)

    state: dict[str, Any] = {"step": 0, "history": None, "extra": {}, "rng": None}
    json_file = path / STATE_JSON_FILE
    if json_file.is_file():
        tensors = st_load((path / STATE_TENSORS_FILE).read_bytes())
        state = _join_tensors(json.loads(json_file.read_text()), tensors)
    elif optimizer is not None or scheduler is not None:
        raise FileNotFoundError(f"{path} holds model weights only ({STATE_JSON_FILE} missing): "
                                "it cannot restore an optimizer or scheduler")
    if optimizer is not None and state.get("optimizer") is None:
        raise ValueError(f"{path} was saved without an optimizer state; load it without optimizer=")

    with torch.no_grad():
        _unwrap(model).load_state_dict(weights, strict=True)
    if optimizer is not None:
        opt_state = state["optimizer"]
        opt_state["state"] = {int(k): v for k, v in opt_state["state"].items()}
        for group, current in zip(opt_state["param_groups"], optimizer.param_groups):
            for k, v in current.items():  # JSON turned tuples (betas) into lists
                if isinstance(v, tuple) and isinstance(group.get(k), list):
                    group[k] = tuple(group[k])
        if len(opt_state["param_groups"]) != len(optimizer.param_groups):
            raise CheckpointMismatchError(
                f"{path}: the optimizer state has {len(opt_state['param_groups'])} parameter groups, this "
                f"optimizer {len(optimizer.param_groups)}; build it with make_optimizer(model, ...)"
            )
        optimizer.load_state_dict(opt_state)
    if scheduler is not None:
        if state.get("scheduler") is None:
            raise ValueError(f"{path} was saved without a scheduler state; load it without scheduler=")
        scheduler.load_state_dict(state["scheduler"])
    history = state.get("history")
    return {
        "step": int(state.get("step", 0)),
        "history": None if history is None else History.from_dict(history),
        "extra": state.get("extra") or {},
        "rng": None if state.get("rng") is None else _rng_from_tree(state["rng"]),
        "data": (state.get("extra") or {}).get("_data"),
    }


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device | None) -> tuple[_Dist, torch.device | None]:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        info = _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        info = _Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        use_cuda = (device is None and torch.cuda.is_available()) or (device is not None and
                                                                       torch.device(device).type == "cuda")
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    else:
        return _Dist(), device
    if info.enabled:
        wants_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        if wants_cuda and (device is None or torch.device(device).index is None):
            device = torch.device("cuda", info.local_rank)  # one GPU per process
    return info, device


def _shard(batch: Mapping[str, Any], dist_info: _Dist) -> dict[str, Any]:
    """This process's contiguous slice of every batch-sized tensor."""
    sizes = {v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0}
    if len(sizes) != 1:
        raise ValueError(f"cannot split a batch whose tensors disagree on the batch size: {sorted(sizes)}")
    (n,) = sizes
    if n < dist_info.world_size:
        raise ValueError(f"a batch of {n} cannot be split over {dist_info.world_size} processes; "
                         "use a larger batch or drop_last=True")
    return {k: torch.tensor_split(v, dist_info.world_size)[dist_info.rank]
            if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in batch.items()}


# --------------------------------------------------------------------------- the data stream


class _BatchStream:
    """Micro-batches forever, epoch after epoch, drawn under the stream's own random state."""

    def __init__(self, train_data: Any, seed: int):
        if callable(train_data) and not hasattr(train_data, "__iter__"):
            self._make = train_data
        elif isinstance(train_data, Iterable):
            if iter(train_data) is train_data:
                raise TypeError(
                    "train_data is a one-shot iterator (e.g. a generator), which cannot be replayed for a "
                    "second epoch or a resume; pass a list, a DataLoader, or a function returning a fresh "
                    "iterator: train(model, lambda: make_batches(), config)"
                )
            self._make = lambda: iter(train_data)
        else:
            raise TypeError(f"train_data must be an iterable of batches or a callable returning one, "
                            f"got {type(train_data).__name__}")
        self.sampler = getattr(train_data, "sampler", None)
        self.epoch, self.index = 0, 0
        self.rng = _seeded_rng_state(seed)
        self.epoch_rng: dict[str, Any] | None = None
        self._it = None

    @contextlib.contextmanager
    def _own_rng(self):
        outer = _rng_state()
        _set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = _rng_state()
            _set_rng_state(outer)

    def _start_epoch(self) -> None:
        self.epoch_rng = _rng_state()
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        self._it = self._make()

    def __next__(self) -> Any:
        with self._own_rng():
            while True:
                if self._it is None:
                    self._start_epoch()
                try:
                    batch = next(self._it)
                except StopIteration:
                    if self.index == 0:
                        raise ValueError("train_data yielded no batches in an epoch") from None
                    self.epoch, self.index, self._it = self.epoch + 1, 0, None
                    continue
                self.index += 1
                return batch

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "rng": _rng_to_tree(self.rng),
                "epoch_rng": None if self._it is None else _rng_to_tree(self.epoch_rng)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Return to a saved position: replay the epoch's start and skip the batches already used."""
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._it = None
        if state.get("epoch_rng") is not None:
            self.rng = _rng_from_tree(state["epoch_rng"])
            with self._own_rng():
                self._start_epoch()
                for i in range(self.index):
                    try:
                        next(self._it)
                    except StopIteration:
                        raise ValueError(
                            f"cannot resume: the checkpoint is {self.index} batches into epoch {self.epoch}, "
                            f"but train_data now has only {i}; resume with the same data"
                        ) from None
        self.rng = _rng_from_tree(state["rng"])


# --------------------------------------------------------------------------- the loop


def _count_tokens(batch: Mapping[str, Any]) -> int:
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        return int(mask.sum())
    ids = batch.get("input_ids")
    if isinstance(ids, torch.Tensor):
        return ids.numel()
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return 0


def _scalars(output: Any) -> dict[str, torch.Tensor]:
    """Scalar tensors named ``*loss*`` or ``*accuracy*`` on a model output (``loss`` itself included)."""
    if isinstance(output, Mapping):
        items = output.items()
    elif dataclasses.is_dataclass(output):
        items = ((f.name, getattr(output, f.name)) for f in dataclasses.fields(output))
    elif hasattr(output, "_asdict"):
        items = output._asdict().items()
    else:
        items = vars(output).items() if hasattr(output, "__dict__") else ()
    return {k: v.detach().float().reshape(()) for k, v in items
            if ("loss" in k or "accuracy" in k) and isinstance(v, torch.Tensor) and v.numel() == 1}


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def _ready_batch(batch: Any) -> Mapping[str, Any]:
    if not isinstance(batch, Mapping):
        raise TypeError(f"each batch must be a dict of tensors passed as model(**batch), got "
                        f"{type(batch).__name__}; give the DataLoader a collate_fn that returns a dict")
    return batch


def train(
    model: nn.Module,
    train_data: Any,
    config: TrainConfig,
    *,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    resume: bool | str | os.PathLike = False,
    callbacks: Iterable[Callable[[dict[str, Any]], Any]] | None = None,
) -> History:
    """Train ``model`` in place on ``train_data`` as ``config`` says; return the :class:`History`.

    ``eval_fn(model) -> {name: number}`` runs every ``config.eval_every`` steps and
    at the end, with the model in eval mode under ``torch.no_grad()`` and its own
    random state (so evaluating never changes the training run).
    ``resume=True`` continues from ``<checkpoint_dir>/last`` if it exists (else starts
    fresh); a path resumes from that checkpoint. The resumed run ends with the same
    weights as an uninterrupted one (same data, config and seed).
    ``callbacks``: functions called after every optimizer step with a dict
    ``{"step", "model", "optimizer", "scheduler", "history", "record"}``; a callback
    returning ``True`` stops training (``history.stop_reason = "callback"``); under
    ``torchrun`` they run in every process and rank 0's answer decides.
    The model is left in eval mode at the end.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    dist_info, device = _init_distributed(config.device)
    device = torch.device(device) if device is not None else runtime.device()
    total_steps = config.total_steps(train_data)
    callbacks = list(callbacks or [])
    model = _unwrap(model).to(device)
    raw_model = model

    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    scheduler = linear_warmup_decay(optimizer, config.warmup(total_steps), total_steps)
    amp_dtype = resolve_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    history = History()
    runtime.seed_everything(config.seed)
    stream = _BatchStream(train_data, seed=config.seed + 1_000_003)  # data and dropout draw different numbers
    step = 0
    elapsed_before = 0.0

    resume_path = None
    if resume:
        if resume is True:
            if config.checkpoint_dir is None:
                raise ValueError("resume=True needs TrainConfig.checkpoint_dir (or pass resume=<checkpoint path>)")
            candidate = Path(config.checkpoint_dir) / LAST
            resume_path = candidate if (candidate / MODEL_FILE).is_file() else None
        else:
            resume_path = Path(resume)
    if resume_path is not None:
        state = load_checkpoint(resume_path, model, optimizer, scheduler)
        step = state["step"]
        history = state["history"] or History()
        history.stop_reason = None
        elapsed_before = history.elapsed
        saved_config = state["extra"].get("config") or {}
        changed = sorted(k for k in TRAJECTORY_FIELDS
                         if k in saved_config and saved_config[k] != config.to_dict()[k])
        if changed:
            warnings.warn(f"resuming {resume_path} with a different {', '.join(changed)} than it was saved "
                          "with: training continues, but will not match an uninterrupted run", stacklevel=2)
        if state["data"] is not None:
            stream.load_state(state["data"])
        if scaler is not None and "grad_scaler" in state["extra"]:
            scaler.load_state_dict(state["extra"]["grad_scaler"])
        if state["rng"] is not None:
            _set_rng_state(state["rng"])  # every process continues from rank 0's random state
        if step >= total_steps:  # nothing left to do
            model.eval()
            return history

    ddp_model: nn.Module = model
    if dist_info.enabled:
        # find_unused_parameters: a head the loss does not use (the NSP head when training MLM
        # alone) gets no gradient, which DDP otherwise takes for a bug (as transformers' Trainer)
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    shard = dist_info.enabled and not isinstance(
        stream.sampler, torch.utils.data.distributed.DistributedSampler)

    def checkpoint() -> None:
        if config.checkpoint_dir is None or not dist_info.main:
            return
        extra = {"_data": stream.state(), "config": config.to_dict()}
        if scaler is not None:
            extra["grad_scaler"] = scaler.state_dict()
        save_checkpoint(Path(config.checkpoint_dir) / LAST, raw_model, optimizer, scheduler, step, history, extra)

    def evaluate() -> None:
        if eval_fn is None:
            return
        was_training = raw_model.training
        saved = _rng_state(cuda=True)
        raw_model.eval()
        try:
            with torch.no_grad():
                metrics = dict(eval_fn(raw_model)) if dist_info.main else {}
        finally:
            _set_rng_state(saved)
            raw_model.train(was_training)
        if dist_info.main:
            bad = [k for k, v in metrics.items() if not isinstance(v, (int, float, np.number))
                   and not (isinstance(v, torch.Tensor) and v.numel() == 1)]
            if bad:
                raise TypeError(f"eval_fn must return {{name: number}}; these are not numbers: {bad}")
            history.evals.append({"step": step, "elapsed": elapsed_before + (time.perf_counter() - t0),
                                  **{k: float(v) for k, v in metrics.items()}})
            if bar is not None:
                bar.write(f"step {step}: " + ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items()))

    pending: list[dict[str, Any]] = []
    window = {"t": 0.0}  # start of the current log window (set when the loop starts)

    def flush() -> None:
        """Turn the steps since the last flush into history records (one device sync)."""
        if not pending:
            return
        keys = sorted(set().union(*(p["scalars"] for p in pending)))
        rows = [torch.stack([p["scalars"].get(k, torch.tensor(float("nan"), device=device)) for k in keys])
                for p in pending]
        values = torch.stack(rows).float()
        tokens = torch.tensor([float(p["tokens"]) for p in pending], device=device)
        if dist_info.enabled:
            import torch.distributed as dist

            dist.all_reduce(values)
            values /= dist_info.world_size
            dist.all_reduce(tokens)  # global tokens in each step
        values, tokens = values.tolist(), tokens.tolist()
        now = time.perf_counter()
        rate = sum(tokens) / max(now - window["t"], 1e-9)
        for p, vals, tok in zip(pending, values, tokens):
            rec = {"step": p["step"], **dict(zip(keys, vals)), "lr": p["lr"], "tokens": tok,
                   "tokens_per_s": rate, "elapsed": p["elapsed"]}
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(
                    f"the loss became {rec['loss']} at step {p['step']}: lower lr (now {config.lr}), "
                    "keep max_grad_norm set, or try amp=None to rule out fp16 overflow"
                )
            history.records.append(rec)
        pending.clear()
        window["t"] = now
        if bar is not None:
            bar.set_postfix(loss=f"{history.records[-1]['loss']:.4f}", tok_s=f"{rate:,.0f}", refresh=False)

    bar = None
    if config.progress and dist_info.main:
        # At most one redraw a second: each redraw is a kernel message, and nbval reads none until
        # the cell ends, so a 6-minute cell redrawing every 0.1 s overflowed the kernel's message
        # queue, most likely (the "idle" message was lost and nbval timed out waiting for it).
        bar = tqdm(total=total_steps, initial=step, desc=config.desc, dynamic_ncols=True, mininterval=1.0)
    t0 = window["t"] = time.perf_counter()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    autocast = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    ddp_model.train()
    last_eval = last_ckpt = -1
    try:
        while step < total_steps:
            sums: dict[str, torch.Tensor] = {}
            tokens = 0
            for micro in range(config.grad_accum_steps):
                batch = _ready_batch(next(stream))
                if shard:
                    batch = _shard(batch, dist_info)
                tokens += _count_tokens(batch)  # this process's share; flush() sums over processes
                batch = _to_device(batch, device)
                sync = (not dist_info.enabled or micro == config.grad_accum_steps - 1)
                with (contextlib.nullcontext() if sync else ddp_model.no_sync()):
                    with autocast:
                        output = ddp_model(**batch)
                    loss = getattr(output, "loss", None)
                    if loss is None and isinstance(output, Mapping):
                        loss = output.get("loss")
                    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                        raise ValueError(
                            "the model returned no scalar .loss: put the labels in the batch "
                            f"(batch keys: {sorted(batch)}) and make forward() return an output with .loss"
                        )
                    if dist_info.enabled and not (isinstance(output, (Mapping, tuple, list))
                                                  or dataclasses.is_dataclass(output)):
                        raise TypeError(
                            f"under torchrun the model must return a dataclass, dict or tuple (got "
                            f"{type(output).__name__}): DDP looks inside it for the tensors the loss used"
                        )
                    scaled = loss.float() / config.grad_accum_steps
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                for k, v in _scalars(output).items():
                    sums[k] = sums[k] + v if k in sums else v
            if scaler is not None:
                scaler.unscale_(optimizer)
            if config.max_grad_norm is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            else:
                norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
                grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
            lr = optimizer.param_groups[0]["lr"]
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            with warnings.catch_warnings():  # fp16 skips steps with inf gradients, on purpose
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            scalars = {k: v / config.grad_accum_steps for k, v in sums.items()}
            scalars["grad_norm"] = grad_norm.detach().float()
            pending.append({"step": step, "scalars": scalars, "lr": lr, "tokens": tokens,
                            "elapsed": elapsed_before + (time.perf_counter() - t0)})
            if bar is not None:
                bar.update(1)
            if step % config.log_every == 0 or step == total_steps:
                flush()
            if config.eval_every and step % config.eval_every == 0:
                flush()
                evaluate()
                last_eval = step
            stop = None
            if config.max_time_s is not None and time.perf_counter() - t0 > config.max_time_s:
                stop = "max_time_s"
            if callbacks:
                flush()
                info = {"step": step, "model": raw_model, "optimizer": optimizer, "scheduler": scheduler,
                        "history": history, "record": history.records[-1] if history.records else None}
                if any(cb(info) is True for cb in callbacks):
                    stop = stop or "callback"
            if dist_info.enabled and (config.max_time_s is not None or callbacks):
                import torch.distributed as dist

                reasons = (None, "max_time_s", "callback")
                code = torch.tensor([reasons.index(stop)], device=device)
                dist.broadcast(code, src=0)  # rank 0's clock and callbacks decide for everyone
                stop = reasons[int(code.item())]
            if config.checkpoint_every and step % config.checkpoint_every == 0 and not stop:
                flush()
                checkpoint()
                last_ckpt = step
            if stop:
                history.stop_reason = stop
                break
        flush()
        if last_eval != step:
            evaluate()
        if last_ckpt != step:
            checkpoint()
        if dist_info.enabled:
            import torch.distributed as dist

            dist.barrier()  # no process returns (and maybe resumes) before rank 0's checkpoint is written
    finally:
        if bar is not None:
            bar.close()
    raw_model.eval()
    return history
