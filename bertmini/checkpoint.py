"""Checkpoints: a model's weights and a run's state on disk, in safetensors (never pickles), written atomically.

A checkpoint is a directory:

- ``model.safetensors``: the weights, loadable on its own with ``safetensors``. A tied
  weight (the MLM decoder *is* the word-embedding matrix) is stored once, its other
  name recorded in the file's metadata;
- ``training_state.safetensors`` + ``training_state.json``: the step, the optimizer and
  scheduler state, the random state of every generator, the history and ``extra``
  values; tensors go to the safetensors file, everything else to JSON.

:func:`load_state_dict_strict` is the one strict loader of the book (checkpoints here,
``transformers`` weights in :mod:`bertmini.hf`): every key accounted for, every shape
equal, or an error that names each one that is not, before anything is changed.

The random state (torch, Python, NumPy, CUDA) is saved so that a resumed run draws the
same numbers as an uninterrupted one; :func:`rng_state` / :func:`set_rng_state` capture
and restore it.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from . import runtime
from .history import History

CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"
LAST = "last"  # train() keeps its latest checkpoint in <checkpoint_dir>/last
# Buffers older transformers versions saved with the weights; bertmini rebuilds them.
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class CheckpointMismatchError(ValueError):
    """Weights that do not fit the model they are loaded into (keys or shapes)."""


# --------------------------------------------------------------------------- random state


def rng_state(cuda: bool = False) -> dict[str, Any]:
    """The state of every random generator a run draws from."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seeded_rng_state(seed: int) -> dict[str, Any]:
    """The CPU random state ``runtime.seed_everything(seed)`` would leave, without touching the current one."""
    saved = rng_state(cuda=True)  # torch.manual_seed reseeds CUDA too
    runtime.seed_everything(seed)
    state = rng_state()
    set_rng_state(saved)
    return state


def rng_to_tree(state: Mapping[str, Any]) -> dict[str, Any]:
    """A random state as JSON values and tensors (Python's tuple and NumPy's array made explicit)."""
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


def rng_from_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- tensors in a JSON tree


def split_tensors(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by ``{"__tensor__": key}``, collecting it in ``tensors``."""
    if isinstance(tree, torch.Tensor):
        key = prefix.rstrip(".")
        tensors[key] = tree.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(tree, Mapping):
        return {str(k): split_tensors(v, f"{prefix}{k}.", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [split_tensors(v, f"{prefix}{i}.", tensors) for i, v in enumerate(tree)]
    if isinstance(tree, (np.floating, np.integer)):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(
        f"cannot store {type(tree).__name__} at {prefix.rstrip('.') or 'top level'} in a checkpoint: "
        "only tensors, numbers, strings, None, lists and dicts are saved (no pickles)"
    )


def join_tensors(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`split_tensors`."""
    if isinstance(tree, Mapping):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        return {k: join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_tensors(v, tensors) for v in tree]
    return tree


# --------------------------------------------------------------------------- weights


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def tied_names(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """``{duplicate_name: first_name}`` for the tensors of a state dict that share memory (tied weights)."""
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


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = "\n    ".join(items[:12]) + (f"\n    ... and {len(items) - 12} more" if len(items) > 12 else "")
    return f"\n  {title} ({len(items)}):\n    {shown}"


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
                           aliases: Mapping[str, str] | None = None, where: str = "") -> None:
    """Copy ``state_dict`` into ``model``, or raise :class:`CheckpointMismatchError` naming every
    missing key, unexpected key and shape mismatch at once, with the model untouched.

    A tied weight needs to be there under one of its names: ``aliases`` maps a name the
    source may leave out to the name it is tied to (as ``transformers``' ``_tied_weights_keys``
    and the metadata of :func:`save_checkpoint` do), and tensors that share memory in
    ``model`` are filled through each other. ``source`` names the weights in the message
    ("checkpoint", "BertForPreTraining"); ``where`` says where they came from (a path).
    """
    aliases = dict(aliases or {})
    own = model.state_dict()
    aliases.update({k: v for k, v in tied_names(own).items() if k not in aliases})
    given = {k: v for k, v in state_dict.items()
             if not any(k == b or k.endswith("." + b) for b in IGNORED_BUFFERS)}

    def lookup(k: str) -> torch.Tensor | None:
        return given[k] if k in given else given.get(aliases.get(k, ""))

    missing = [k for k in own if lookup(k) is None]
    unexpected = [k for k in given if k not in own and aliases.get(k) not in own]
    wrong = [f"{k}: {source} {tuple(lookup(k).shape)} vs model {tuple(own[k].shape)}"
             for k in own if lookup(k) is not None and lookup(k).shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(
            f"cannot load the {source}{f' at {where}' if where else ''} into {type(model).__name__}:"
            + _listing(f"missing from the {source}", missing)
            + _listing(f"in the {source} but not in the model", unexpected)
            + _listing("shape mismatches", wrong)
            + "\nBuild the model with the configuration the weights were saved with "
            "(same class, sizes and vocabulary)."
        )
    with torch.no_grad():
        model.load_state_dict({k: lookup(k) for k in own}, strict=True)


def _model_file_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    state = unwrap(model).state_dict()
    aliases = tied_names(state)
    # safetensors refuses two names for one tensor: store the tied weight once, record the alias.
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in aliases}
    return st_save(tensors, metadata={**metadata, "aliases": json.dumps(aliases)})


# --------------------------------------------------------------------------- save and load


@contextlib.contextmanager
def _atomic_dir(path: Path):
    """Write a checkpoint into a fresh temporary sibling directory, then swap it in with renames."""
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


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, step: int = 0, history: History | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Save a checkpoint *directory* ``path`` (the files in the module docstring).

    ``extra`` is a dict of numbers, strings, lists, dicts and tensors. The directory is
    written beside ``path`` and renamed into place, so a crash leaves the previous
    checkpoint (or none), never a mix. Returns ``path``.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "optimizer": None if optimizer is None else split_tensors(optimizer.state_dict(), "optimizer.", tensors),
        "scheduler": None if scheduler is None else split_tensors(scheduler.state_dict(), "scheduler.", tensors),
        "rng": split_tensors(rng_to_tree(rng_state(cuda=True)), "rng.", tensors),
        "history": None if history is None else history.to_dict(),
        "extra": split_tensors(dict(extra or {}), "extra.", tensors),
    }
    with _atomic_dir(path) as tmp:
        (tmp / MODEL_FILE).write_bytes(_model_file_bytes(model, {"format": "pt", "step": str(int(step))}))
        (tmp / STATE_TENSORS_FILE).write_bytes(st_save(tensors, metadata={"format": "pt"}))
        (tmp / STATE_JSON_FILE).write_text(json.dumps(state, indent=1, allow_nan=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    return path


def _read_state(path: Path, optimizer, scheduler) -> dict[str, Any]:
    json_file = path / STATE_JSON_FILE
    if not json_file.is_file():
        if optimizer is not None or scheduler is not None:
            raise FileNotFoundError(f"{path} holds model weights only ({STATE_JSON_FILE} missing): "
                                    "it cannot restore an optimizer or scheduler")
        return {"step": 0, "history": None, "extra": {}, "rng": None}
    state = join_tensors(json.loads(json_file.read_text()), st_load((path / STATE_TENSORS_FILE).read_bytes()))
    if optimizer is not None and state.get("optimizer") is None:
        raise ValueError(f"{path} was saved without an optimizer state; load it without optimizer=")
    if scheduler is not None and state.get("scheduler") is None:
        raise ValueError(f"{path} was saved without a scheduler state; load it without scheduler=")
    return state


def _optimizer_state(path: Path, saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise CheckpointMismatchError(
            f"{path}: the optimizer state has {len(saved['param_groups'])} parameter groups, this "
            f"optimizer {len(optimizer.param_groups)}; build it with make_optimizer(model, ...)")
    saved["state"] = {int(k): v for k, v in saved["state"].items()}
    for group, current in zip(saved["param_groups"], optimizer.param_groups):
        for k, v in current.items():  # JSON turned tuples (betas) into lists
            if isinstance(v, tuple) and isinstance(group.get(k), list):
                group[k] = tuple(group[k])
    return saved


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None) -> dict[str, Any]:
    """Load a directory written by :func:`save_checkpoint` into ``model`` (and the optimizer
    and scheduler if given); a ``train()`` ``checkpoint_dir`` means its latest checkpoint,
    ``<checkpoint_dir>/last``. Keys or shapes that do not match raise
    :class:`CheckpointMismatchError` naming them, before anything is changed.

    Returns ``{"step", "history" (a History or None), "extra", "rng", "data"}``; the global
    random state is *not* restored here (``train(resume=True)`` does that).
    """
    path = Path(path)
    if not (path / MODEL_FILE).is_file() and (path / LAST / MODEL_FILE).is_file():
        path = path / LAST
    if not (path / MODEL_FILE).is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: {MODEL_FILE} is missing (give the directory "
                                "save_checkpoint wrote, or a train() checkpoint_dir)")
    with safe_open(str(path / MODEL_FILE), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        stored = {k: f.get_tensor(k) for k in f.keys()}
    state = _read_state(path, optimizer, scheduler)
    opt_state = None if optimizer is None else _optimizer_state(path, state["optimizer"], optimizer)
    load_state_dict_strict(unwrap(model), stored, aliases=aliases, where=str(path))
    if optimizer is not None:
        optimizer.load_state_dict(opt_state)
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    history, extra = state.get("history"), state.get("extra") or {}
    return {
        "step": int(state.get("step", 0)),
        "history": None if history is None else History.from_dict(history),
        "extra": extra,
        "rng": None if state.get("rng") is None else rng_from_tree(state["rng"]),
        "data": extra.get("_data"),
    }
