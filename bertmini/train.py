"""One training loop for the whole book: pretraining (chapter 4) and fine-tuning (chapter 5).

::

    from bertmini.train import TrainConfig, train
    history = train(model, batches, TrainConfig(lr=1e-3, max_steps=500, eval_every=100),
                    eval_fn=lambda m: {"accuracy": accuracy(m)})
    plt.plot(history.steps, history.losses)

What one optimizer step does (the recipe of the BERT paper, as ``transformers`` runs it):

1. ``grad_accum_steps`` micro-batches, each ``model(**batch)`` under autocast; its
   ``.loss`` divided by ``grad_accum_steps`` and back-propagated (the gradients add up);
2. the gradient norm clipped to ``max_grad_norm``;
3. an AdamW step, with no weight decay on biases and LayerNorm weights
   (:func:`optimizer_param_groups`);
4. the learning rate moved along linear warmup then linear decay (:func:`linear_warmup_decay`).

:func:`train_step` is that step, whole; :func:`train` repeats it.

Around it: a progress bar, ``eval_fn`` every ``eval_every`` steps, a
:class:`~bertmini.history.History` for plots, a wall-clock budget, and three things
that live in modules of their own: checkpoints and exact resume
(:mod:`bertmini.checkpoint`, :mod:`bertmini.batch_stream`) and data parallelism under
``torchrun`` (:mod:`bertmini.distributed`).

A batch is a dict of tensors passed as ``model(**batch)``; ``train_data`` is anything
:class:`~bertmini.batch_stream.BatchStream` accepts (a list of batches, a
``DataLoader``, a re-iterable object, a function returning a fresh iterator). An
accumulated step may span two epochs; the stream runs until ``max_steps`` optimizer
steps are done.

Not handled: ``torch.compile``-d models in checkpoints (save ``model._orig_mod``),
model parallelism, schedules other than linear, and data of unknown length together
with ``epochs`` (give ``max_steps``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed, runtime
from .batch_stream import BatchStream
from .checkpoint import (JOURNAL_FILE, LAST, MODEL_FILE, check_writable, load_checkpoint, recover, rng_state,
                         save_checkpoint, set_rng_state, unwrap)
from .history import History

__all__ = ["TrainConfig", "train", "train_step", "optimizer_param_groups", "make_optimizer",
           "linear_warmup_decay", "resolve_amp"]

AMP_CHOICES = ("auto", "fp32", "bf16", "fp16", None)  # None and "fp32": no autocast
# the TrainConfig fields a resumed run must share with the saved one to retrace it exactly
TRAJECTORY_FIELDS = ("lr", "weight_decay", "warmup_ratio", "warmup_steps", "max_steps", "epochs",
                     "grad_accum_steps", "max_grad_norm", "amp", "seed")


# --------------------------------------------------------------------------- config


def step_cap() -> int | float:
    """``BERTMINI_MAX_STEPS``, a cap on every training run's optimizer steps, else no cap.

    For smoke runs only: ``tools/profile_smoke.py`` runs every chapter's gpu recipes on a CPU
    cut to a few hundred steps, to show the cells run at that size. A capped run learns less than
    the chapter says, and what it trains is cached like a full run, so use a throwaway
    ``BERTMINI_CACHE`` with it."""
    value = os.environ.get("BERTMINI_MAX_STEPS", "").strip()
    if not value:
        return math.inf
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"BERTMINI_MAX_STEPS={value!r} must be a positive number of steps; unset it for full runs")
    return int(value)


@dataclass
class TrainConfig:
    """Everything :func:`train` needs besides the model and the data.

    Give the length as ``max_steps`` (optimizer steps) or ``epochs`` (needs
    ``len(train_data)``); warmup as ``warmup_ratio`` of the steps or an absolute
    ``warmup_steps`` (which wins). ``amp``: ``"auto"`` follows ``BERTMINI_AMP`` if set, else picks bf16 on CUDA
    (fp16 on GPUs without bf16) and on CPUs with native bf16 instructions, where bf16
    autocast is faster (see :func:`resolve_amp`); ``None`` is fp32.
    ``warmup_steps`` above ``max_steps`` is an error. ``max_grad_norm=None`` disables
    clipping. ``max_time_s`` is a wall-clock budget for one call of :func:`train`: when
    spent, the loop stops after the current step, evaluates, saves and records
    ``history.stop_reason = "max_time_s"``. ``checkpoint_dir`` is checked before the first
    step (a folder that cannot be written fails at once).
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
        if self.warmup_steps is not None and self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps} is more than max_steps={self.max_steps}: "
                             "the learning rate would never reach lr. Lower warmup_steps (e.g. max_steps // 10) "
                             "or give warmup_ratio instead")
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
        """Optimizer steps this config trains for (``max_steps``, or ``epochs`` worth of batches),
        cut to ``BERTMINI_MAX_STEPS`` if that is set (see :func:`step_cap`)."""
        if self.max_steps is not None:
            return min(self.max_steps, step_cap())
        try:
            n_batches = len(train_data)
        except TypeError:
            raise TypeError(
                "TrainConfig(epochs=...) needs len(train_data); this train_data has no length. "
                "Give max_steps=... instead."
            ) from None
        return min(max(1, int(self.epochs * n_batches) // self.grad_accum_steps), step_cap())

    def warmup(self, total_steps: int) -> int:
        if self.warmup_steps is not None and self.warmup_steps > total_steps:  # known only now, with epochs=
            warnings.warn(f"TrainConfig.warmup_steps={self.warmup_steps} is more than the {total_steps} steps of "
                          f"this run: warming up over all {total_steps} instead, so the learning rate reaches lr "
                          "only at the last step. Lower warmup_steps or give warmup_ratio", stacklevel=3)
            return total_steps
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(round(self.warmup_ratio * total_steps))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        d["device"] = None if self.device is None else str(self.device)
        return d


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
    """The BERT schedule: the lr rises linearly from 0 over ``warmup_steps``,
    then falls linearly to 0 at ``total_steps``. Same factors as
    ``transformers.get_linear_schedule_with_warmup``."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0, "
                         f"got {total_steps} and {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- mixed precision


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (``None``: plain fp32).

    ``"auto"``: what the environment variable ``BERTMINI_AMP`` says (``fp32``, ``bf16``,
    ``fp16``) if it is set to one of them, else bf16 on CUDA if the GPU supports it, else fp16 (with a gradient
    scaler); on a CPU, bf16 only when it has native bf16 instructions
    (AVX512-BF16 or AMX): elsewhere bf16 matmuls are emulated and slower than fp32
    (``bench/mlm_throughput.py`` measures both). For toy models (width 32) the casts
    cost more than they save: pass ``amp=None``. MPS: fp32.
    """
    if amp == "auto" and os.environ.get("BERTMINI_AMP", "auto") != "auto":
        amp = os.environ["BERTMINI_AMP"]
        if amp not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"BERTMINI_AMP={amp!r}; use auto, fp32, bf16 or fp16")
    if amp is None or amp == "fp32":
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


def numeric_path(amp: str | None = "auto", device: torch.device | str | None = None) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: the path ``amp`` takes on ``device`` (default: the
    book's device), as :func:`resolve_amp` decides it."""
    device = torch.device(device) if device is not None else runtime.device()
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[resolve_amp(amp, device)]


def _cpu_has_native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))
    except Exception:  # private helpers: never let a probe break training
        return False


# --------------------------------------------------------------------------- the loop


def _loss_of(output: Any, batch: Mapping[str, Any], model: nn.Module) -> torch.Tensor:
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError("the model returned no scalar .loss: put the labels in the batch "
                         f"(batch keys: {sorted(batch)}) and make forward() return an output with .loss")
    if isinstance(model, nn.parallel.DistributedDataParallel) and not (
            isinstance(output, (Mapping, tuple, list)) or dataclasses.is_dataclass(output)):
        raise TypeError(f"under torchrun the model must return a dataclass, dict or tuple (got "
                        f"{type(output).__name__}): DDP looks inside it for the tensors the loss used")
    return loss


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


def _count_tokens(batch: Mapping[str, Any]) -> int:
    """``attention_mask`` ones, else ``input_ids`` elements, else examples."""
    mask, ids = batch.get("attention_mask"), batch.get("input_ids")
    if isinstance(mask, torch.Tensor):
        return int(mask.sum())
    if isinstance(ids, torch.Tensor):
        return ids.numel()
    sizes = [int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    return sizes[0] if sizes else 0


class _Log:
    """Per-step numbers into the history, a ``log_every`` window at a time (one device sync per window)."""

    def __init__(self, history: History, config: TrainConfig, dist: distributed.Dist, device, total: int, step: int):
        self.history, self.config, self.dist, self.device = history, config, dist, device
        self.pending: list[dict[str, Any]] = []
        # At most one redraw a second: nbval reads no kernel message until a cell ends.
        self.bar = (tqdm(total=total, initial=step, desc=config.desc, dynamic_ncols=True, mininterval=1.0)
                    if config.progress and dist.main else None)
        self.window_start = time.perf_counter()

    def add(self, **record: Any) -> None:
        self.pending.append(record)
        if self.bar is not None:
            self.bar.update(1)

    def flush(self) -> None:
        if not self.pending:
            return
        keys = sorted(set().union(*(p["scalars"] for p in self.pending)))
        nan = torch.tensor(float("nan"), device=self.device)
        values = torch.stack([torch.stack([p["scalars"].get(k, nan) for k in keys]) for p in self.pending]).float()
        tokens = torch.tensor([float(p["tokens"]) for p in self.pending], device=self.device)
        if self.dist.enabled:
            distributed.mean_over_processes(values, tokens)
        now = time.perf_counter()
        rate = sum(tokens.tolist()) / max(now - self.window_start, 1e-9)
        for p, vals, tok in zip(self.pending, values.tolist(), tokens.tolist()):
            rec = {"step": p["step"], **dict(zip(keys, vals)), "lr": p["lr"], "tokens": tok,
                   "tokens_per_s": rate, "elapsed": p["elapsed"]}
            self.history.records.append(rec)
        self.pending.clear()
        self.window_start = now
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.history.records[-1]['loss']:.4f}", tok_s=f"{rate:,.0f}", refresh=False)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _evaluate(model: nn.Module, eval_fn, step: int, elapsed: float, log: _Log) -> None:
    """``eval_fn(model)`` in eval mode, no grad, under its own random state, into the history."""
    saved = rng_state(cuda=True)
    try:
        with runtime.eval_mode(model):
            metrics = dict(eval_fn(model)) if log.dist.main else {}
    finally:
        set_rng_state(saved)
    bad = [k for k, v in metrics.items() if not isinstance(v, (int, float, np.number))
           and not (isinstance(v, torch.Tensor) and v.numel() == 1)]
    if bad:
        raise TypeError(f"eval_fn must return {{name: number}}; these are not numbers: {bad}")
    if log.dist.main:
        log.history.evals.append({"step": step, "elapsed": elapsed, **{k: float(v) for k, v in metrics.items()}})
        log.write(f"step {step}: " + ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items()))


def _prepare_checkpoint_dir(last: Path) -> None:
    """Before the first step: finish (or clear away) a save that a killed run left in ``last``,
    and make sure checkpoints can be written there, not only after the last step."""
    recover(last)
    check_writable(last)


def _resume(resume, config: TrainConfig, model, optimizer, scheduler, scaler, stream) -> tuple[int, History]:
    """Load the checkpoint ``resume`` names (if any) into everything; return ``(step, history)``."""
    if resume is True:
        if config.checkpoint_dir is None:
            raise ValueError("resume=True needs TrainConfig.checkpoint_dir (or pass resume=<checkpoint path>)")
        path = Path(config.checkpoint_dir) / LAST
        # a save interrupted after its commit point counts: load_checkpoint reads it through its journal
        # (the journal is looked at first: a save renames its files before it removes the journal)
        if not (path / JOURNAL_FILE).is_file() and not (path / MODEL_FILE).is_file():
            return 0, History()
    else:
        path = Path(resume)
    state = load_checkpoint(path, model, optimizer, scheduler)
    history = state["history"] or History()
    history.stop_reason = None
    saved = state["extra"].get("config") or {}
    changed = sorted(k for k in TRAJECTORY_FIELDS if k in saved and saved[k] != config.to_dict()[k])
    if changed:
        warnings.warn(f"resuming {path} with a different {', '.join(changed)} than it was saved "
                      "with: training continues, but will not match an uninterrupted run", stacklevel=3)
    if state["data"] is not None:
        stream.load_state(state["data"])
    if scaler is not None and "grad_scaler" in state["extra"]:
        scaler.load_state_dict(state["extra"]["grad_scaler"])
    if state["rng"] is not None:
        set_rng_state(state["rng"])  # every process continues from rank 0's random state
    return state["step"], history


def _save(config: TrainConfig, model, optimizer, scheduler, scaler, stream: BatchStream, step: int,
          history: History) -> None:
    extra = {"_data": stream.state(), "config": config.to_dict()}
    if scaler is not None:
        extra["grad_scaler"] = scaler.state_dict()
    save_checkpoint(Path(config.checkpoint_dir) / LAST, model, optimizer, scheduler, step, history, extra)


def _check_loss(loss: torch.Tensor, step: int, config: TrainConfig, optimizer) -> None:
    """Stop at the step whose loss is not finite, before any optimizer step is taken on it, so
    the model keeps the weights of the step before. One scalar read a step: free on a CPU; on a
    GPU it waits for the step's kernels (a host sync), which is worth it, since a NaN noticed only
    at the next log would have been stepped on, and would have made every weight NaN. (Under fp16
    inf *gradients* are normal, the scaler skips those steps; a non-finite loss is not. Under
    torchrun each process checks its own loss; the one that stops ends the run.)"""
    value = float(loss)
    if not math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        raise FloatingPointError(
            f"the loss became {value} at step {step}: lower lr (now {config.lr}), keep max_grad_norm set, "
            f"or try amp=None to rule out fp16 overflow. No optimizer step was taken on it: the model "
            f"holds the weights of step {step - 1}")


def _ddp_sync(model: nn.Module, last: bool):
    """Under torchrun, DDP averages the gradients over the processes on the last
    micro-batch of a step only (``no_sync`` on the others); elsewhere: nothing."""
    if last or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _clip_grad_norm(optimizer, max_norm: float | None) -> torch.Tensor:
    """Clip the gradients' global norm to ``max_norm`` (None: no clipping);
    returns the norm before clipping."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


# what the scheduler says when fp16's scaler skipped an optimizer step, on purpose
SKIPPED_STEP_WARNING = re.escape("Detected call of `lr_scheduler.step()`")


def train_step(model, micro_batches, optimizer, scheduler,
               config: TrainConfig, *, autocast=contextlib.nullcontext(),
               scaler=None, step: int = 1):
    """One optimizer step of the BERT recipe; :func:`train` repeats it.

    ``micro_batches``: ``config.grad_accum_steps`` batches (dicts of tensors on
    the model's device). ``scaler``: fp16's gradient scaler, else None. Returns
    the micro-batches' mean scalars (``loss``, accuracies) and the gradient
    norm before clipping.
    """
    accum, sums = config.grad_accum_steps, {}
    for i, batch in enumerate(micro_batches):
        with _ddp_sync(model, last=i == accum - 1):
            with autocast:  # matmuls in bf16 (or fp16) where the chip has them
                output = model(**batch)
            loss = _loss_of(output, batch, model).float() / accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        for name, value in _scalars(output).items():  # logged: loss, accuracy
            sums[name] = sums[name] + value if name in sums else value
    means = {name: value / accum for name, value in sums.items()}
    _check_loss(means["loss"], step, config, optimizer)  # a NaN stops here
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = _clip_grad_norm(optimizer, config.max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)  # skipped if a gradient is inf
        scaler.update()
    else:
        optimizer.step()  # AdamW
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SKIPPED_STEP_WARNING)
        scheduler.step()  # the learning rate: warmup, then linear decay
    optimizer.zero_grad(set_to_none=True)
    return means, grad_norm.detach().float()


def _micro_batches(stream: BatchStream, accum: int, dist: distributed.Dist, shard: bool,
                   device: torch.device, tokens: list[int]):
    """The next ``accum`` batches of ``stream`` (this process's share under torchrun) on
    ``device``; each one's token count, taken before the move (no device sync), is
    appended to ``tokens`` (this process's share: the log sums over processes)."""
    for _ in range(accum):
        batch = next(stream)
        batch = distributed.shard(batch, dist) if shard else batch
        tokens.append(_count_tokens(batch))
        yield {k: v.to(device, non_blocking=device.type == "cuda") if isinstance(v, torch.Tensor) else v
               for k, v in batch.items()}


def _should_stop(config: TrainConfig, t0: float, callbacks, info: dict[str, Any], dist: distributed.Dist,
                 device) -> str | None:
    stop = "max_time_s" if config.max_time_s is not None and time.perf_counter() - t0 > config.max_time_s else None
    if callbacks and any(cb(info) is True for cb in callbacks):
        stop = stop or "callback"
    if dist.enabled and (config.max_time_s is not None or callbacks):
        stop = distributed.broadcast_choice(stop, (None, "max_time_s", "callback"), device)  # rank 0 decides
    return stop


def train(model: nn.Module, train_data: Any, config: TrainConfig, *,
          eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
          resume: bool | str | os.PathLike = False,
          callbacks: Iterable[Callable[[dict[str, Any]], Any]] | None = None) -> History:
    """Train ``model`` in place on ``train_data`` as ``config`` says; return the :class:`History`.

    ``eval_fn(model) -> {name: number}`` runs every ``config.eval_every`` steps and at the
    end, in eval mode under ``torch.no_grad()`` and its own random state (so evaluating never
    changes the training run). ``resume=True`` continues from ``<checkpoint_dir>/last`` if it
    exists (else starts fresh): the newest complete checkpoint, whenever a run was killed; a
    path resumes from that checkpoint; the resumed run ends with the same weights as an
    uninterrupted one. ``callbacks``: functions called after every optimizer step with
    ``{"step", "model", "optimizer", "scheduler", "history", "record"}``; one returning
    ``True`` stops training. A loss that is not finite raises ``FloatingPointError`` at its
    step, before any optimizer step on it. The model is left in eval mode at the end.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    dist, device = distributed.init_distributed(config.device)
    device = torch.device(device) if device is not None else runtime.device()
    if device.type == "cpu":
        runtime.use_available_cores()  # never more threads than cores this process may use
    total_steps, callbacks = config.total_steps(train_data), list(callbacks or [])
    model = unwrap(model).to(device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    scheduler = linear_warmup_decay(optimizer, config.warmup(total_steps), total_steps)
    amp_dtype = resolve_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    if config.checkpoint_dir is not None and dist.main:
        _prepare_checkpoint_dir(Path(config.checkpoint_dir) / LAST)
    runtime.seed_everything(config.seed)
    stream = BatchStream(train_data, seed=config.seed + 1_000_003)  # data and dropout draw different numbers
    step, history = _resume(resume, config, model, optimizer, scheduler, scaler, stream) if resume else (0, History())
    if step >= total_steps:  # nothing left to do
        model.eval()
        return history
    elapsed_before = history.elapsed
    net = distributed.wrap(model, device) if dist.enabled else model
    shard = dist.enabled and not isinstance(stream.sampler, torch.utils.data.distributed.DistributedSampler)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    def save() -> None:
        if config.checkpoint_dir is not None and dist.main:
            _save(config, model, optimizer, scheduler, scaler, stream, step, history)

    log = _Log(history, config, dist, device, total_steps, step)
    t0 = time.perf_counter()
    net.train()
    last_eval = last_save = -1
    try:
        while step < total_steps:
            lr, tokens = optimizer.param_groups[0]["lr"], []
            batches = _micro_batches(stream, config.grad_accum_steps, dist, shard, device, tokens)
            sums, grad_norm = train_step(net, batches, optimizer, scheduler, config, autocast=autocast,
                                         scaler=scaler, step=step + 1)
            step += 1
            log.add(step=step, scalars={**sums, "grad_norm": grad_norm},
                    lr=lr, tokens=sum(tokens), elapsed=elapsed_before + time.perf_counter() - t0)
            if step % config.log_every == 0 or step == total_steps or callbacks:
                log.flush()
            if config.eval_every and step % config.eval_every == 0 and eval_fn is not None:
                log.flush()
                _evaluate(model, eval_fn, step, elapsed_before + time.perf_counter() - t0, log)
                last_eval = step
            info = {"step": step, "model": model, "optimizer": optimizer, "scheduler": scheduler,
                    "history": history, "record": history.records[-1] if history.records else None}
            stop = _should_stop(config, t0, callbacks, info, dist, device)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and not stop:
                log.flush()
                save()
                last_save = step
            if stop:
                history.stop_reason = stop
                break
        log.flush()
        if last_eval != step and eval_fn is not None:
            _evaluate(model, eval_fn, step, elapsed_before + time.perf_counter() - t0, log)
        if last_save != step:
            save()
        if dist.enabled:
            distributed.barrier()  # no process returns (and maybe resumes) before rank 0's checkpoint is written
    finally:
        log.close()
    model.eval()
    return history
