"""Checkpoints: a model's weights and a run's state on disk, in safetensors (never pickles), saved all or nothing.

A checkpoint is a directory:

- ``model.safetensors``: the weights, loadable on its own with ``safetensors``. A tied
  weight (the MLM decoder *is* the word-embedding matrix) is stored once, its other
  name recorded in the file's metadata;
- ``training_state.safetensors`` + ``training_state.json``: the step, the optimizer and
  scheduler state, the random state of every generator, the history and ``extra``
  values; tensors go to the safetensors file, everything else to JSON;
- ``checkpoint.json``: the manifest, each file's sha256, checked on every load.

Every saved folder of the book (checkpoints, :func:`bertmini.pretraining.save_pretrained`,
:func:`bertmini.finetuning.save_finetuned`) is written by :func:`write_files_atomically`:
a save writes and replaces only its own files, anything else in the folder is left alone,
and whenever the process dies the folder holds the old save or the new one, never a mix.

:func:`load_state_dict_strict` is the one strict loader of the book (checkpoints here,
``transformers`` weights in :mod:`bertmini.hf`): every key accounted for, every shape
equal, or an error that names each one that is not, before anything is changed.

The random state (torch, Python, NumPy, CUDA) is saved so that a resumed run draws the
same numbers as an uninterrupted one; :func:`rng_state` / :func:`set_rng_state` capture
and restore it. Saving itself draws no random numbers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from . import runtime
from .history import History

CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"
MANIFEST_FILE = "checkpoint.json"  # in every saved folder: each file's sha256
JOURNAL_FILE = ".checkpoint.journal.json"  # there only while a committed save renames its files
MANIFEST_FORMAT = 1
LAST = "last"  # train() keeps its latest checkpoint in <checkpoint_dir>/last
# Buffers older transformers versions saved with the weights; bertmini rebuilds them.
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class CheckpointMismatchError(ValueError):
    """Weights that do not fit the model they are loaded into (keys or shapes)."""


class CorruptCheckpointError(ValueError):
    """A saved file that is damaged, truncated, missing, or differs from the sha256 saved with it."""


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
    checked = checked_state_dict(model, state_dict, source, aliases, where)
    with torch.no_grad():
        model.load_state_dict(checked, strict=True)


def checked_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
                       aliases: Mapping[str, str] | None = None, where: str = "") -> dict[str, torch.Tensor]:
    """The checks of :func:`load_state_dict_strict` without the copy: ``{model key: tensor}``,
    ready for ``model.load_state_dict(..., strict=True)``, or the error. Changes nothing."""
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
    return {k: lookup(k) for k in own}


def _model_file_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    state = unwrap(model).state_dict()
    aliases = tied_names(state)
    # safetensors refuses two names for one tensor: store the tied weight once, record the alias.
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if k not in aliases}
    return st_save(tensors, metadata={**metadata, "aliases": json.dumps(aliases)})


# --------------------------------------------------------------------------- a folder's files, all or nothing
#
# How write_files_atomically saves {name: bytes} into a folder, so that a process killed at any
# moment leaves the old save or the new one, and never touches a file that is not its own:
#   1. each file is written to a temporary ``.<name>.<id>.tmp`` beside it and flushed to disk;
#   2. a journal naming the temporaries is renamed to JOURNAL_FILE: the commit point. Before it the
#      old files are untouched; from it on, the new ones are the saved ones;
#   3. the temporaries are renamed over the old files (the manifest, with each sha256, last);
#   4. the journal is removed.
# A reader that finds a journal reads the new files through it and changes nothing (so a read-only
# folder works too); the next save, or train(resume=True), finishes the renames. Temporaries that
# no journal names are what a save that died before its commit left; they are deleted then too.

_TEMPORARY = re.compile(r"^\..+\.\d+-\d+\.tmp$")  # the names _temporary_name makes


def _temporary_name(name: str, save_id: str) -> str:
    return f".{name}.{save_id}.tmp"


def _fix(directory: Path) -> str:
    return f"delete {directory} and save (or train) it again"


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and flush it to the disk, so that no rename exposes a file
    the disk does not hold yet. The mode is the umask's (``runtime.file_mode``), as for any new
    file: tempfile's 0600 would lock the attendees of a workshop out of a cache prepared for them."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    with os.fdopen(os.open(path, flags, runtime.file_mode()), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable (POSIX; Windows cannot open a folder and needs no such step)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_journal(directory: Path) -> dict[str, str] | None:
    """``{name: temporary}`` of a committed save whose renames are not finished, else None."""
    path = directory / JOURNAL_FILE
    try:
        temporaries = json.loads(path.read_bytes())["temporaries"]
        names = [*temporaries, *temporaries.values()]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptCheckpointError(f"{path}, the record of an interrupted save, is damaged ({e}): "
                                     f"{_fix(directory)}") from e
    if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        raise CorruptCheckpointError(f"{path} names files outside {directory}: {_fix(directory)}")
    return temporaries


def _finish_renames(directory: Path, temporaries: Mapping[str, str]) -> None:
    for name, temporary in temporaries.items():  # in the order written: the manifest last
        if (directory / temporary).is_file():
            os.replace(directory / temporary, directory / name)
    _sync_dir(directory)
    os.unlink(directory / JOURNAL_FILE)
    _sync_dir(directory)


def _recover(directory: Path) -> None:
    """Finish a committed save, then delete the temporaries of saves that died before committing."""
    journal = _read_journal(directory)
    if journal is not None:
        _finish_renames(directory, journal)
    for path in directory.iterdir():
        if _TEMPORARY.match(path.name) and path.is_file():
            path.unlink()


def _finish_old_swap(path: Path) -> None:
    """Earlier bertmini versions swapped a whole new checkpoint folder in with two renames; a run
    killed between them left the complete previous one as ``.<name>.old-*`` and no ``<name>``.
    Put the newest of those back, and delete what such swaps left behind."""
    if not path.parent.is_dir():
        return
    prefix = f".{path.name}."
    swapped = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    olds = sorted((p for p in swapped if p.name[len(prefix):].startswith("old-")), key=lambda p: p.stat().st_mtime)
    temporaries = [p for p in swapped if p.name.endswith(".tmp")]
    if olds and not (path / MODEL_FILE).is_file() and not (path / JOURNAL_FILE).is_file():
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            os.replace(olds.pop(), path)
    for leftover in olds + temporaries:
        shutil.rmtree(leftover, ignore_errors=True)


def recover(directory: str | os.PathLike) -> Path:
    """Finish or clear away an interrupted save in ``directory``: a save that died after its
    commit point is completed, the temporaries of one that died before it are deleted (the old
    files were never touched). Saves do this first; ``train(resume=True)`` does it before
    looking for a checkpoint. Returns ``directory``."""
    directory = Path(directory)
    _finish_old_swap(directory)
    if directory.is_dir():
        with runtime.locked(directory, exclusive=True):
            _recover(directory)
    return directory


def _folder_to_save_into(directory: Path, names: Sequence[str]) -> Path:
    bad = [n for n in names if Path(n).name != n or n.startswith(".") or n == MANIFEST_FILE]
    if bad:
        raise ValueError(f"cannot save files named {bad}: give plain file names, not starting with '.', "
                         f"other than {MANIFEST_FILE}")
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot save into {directory}: it is a file, not a folder (it was left as it "
                                 "is). Give the path of a folder: a new one, or one a save wrote before")
    _finish_old_swap(directory)
    runtime.make_dir(directory)
    in_the_way = [n for n in names if (directory / n).is_dir()]
    if in_the_way:
        raise IsADirectoryError(f"cannot save {in_the_way} into {directory}: folders of those names are in "
                                "the way; move or rename them")
    return directory


def write_files_atomically(directory: str | os.PathLike, files: Mapping[str, bytes]) -> Path:
    """Save ``files`` (``{name: bytes}``) into the folder ``directory``, all or nothing.

    Only these files (and the manifest ``checkpoint.json``, which records each one's sha256)
    are written or replaced; every other file in the folder is left as it was. Killed at any
    moment, the folder holds the previous save or this one, never a mix, and
    :func:`read_files` reads whichever it is (the steps are in the comment above). A
    ``directory`` that is a file is refused. Draws no random numbers. Returns ``directory``.
    """
    directory = _folder_to_save_into(Path(directory), list(files))
    manifest = {"format": MANIFEST_FORMAT, "files": {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()}}
    files = {**files, MANIFEST_FILE: json.dumps(manifest, indent=1).encode()}  # the manifest last
    save_id = f"{os.getpid()}-{time.time_ns()}"
    temporaries = {name: _temporary_name(name, save_id) for name in files}
    journal = directory / _temporary_name(JOURNAL_FILE, save_id)
    with runtime.locked(directory, exclusive=True):
        _recover(directory)
        try:
            for name, data in files.items():
                _write_file(directory / temporaries[name], data)
            _write_file(journal, json.dumps({"format": MANIFEST_FORMAT, "temporaries": temporaries}).encode())
            _sync_dir(directory)  # every temporary is on the disk before the commit
            os.replace(journal, directory / JOURNAL_FILE)  # the commit point
        except BaseException as e:  # not committed: the old files are untouched; remove this save's own
            for path in [journal, *(directory / t for t in temporaries.values())]:
                with contextlib.suppress(OSError):
                    path.unlink()
            if isinstance(e, OSError):  # a full disk, a read-only folder: named, with the fix
                raise runtime.write_error(directory, e) from e
            raise
        _finish_renames(directory, temporaries)
    return directory


def _read_manifest(path: Path, directory: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_bytes())
        files, fmt = manifest["files"], int(manifest["format"])
        if not all(isinstance(v["sha256"], str) and isinstance(v["bytes"], int) for v in files.values()):
            raise TypeError("a sha256 that is not a string or a size that is not a number")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptCheckpointError(f"{path} (the list of saved files and their sha256) is damaged "
                                     f"({type(e).__name__}: {e}): {_fix(directory)}") from e
    if fmt > MANIFEST_FORMAT:
        raise ValueError(f"{directory} was saved by a newer bertmini (manifest format {fmt}); upgrade bertmini")
    return files


def _read_checked(path: Path, expected: Mapping[str, Any] | None, directory: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptCheckpointError(f"{path} is missing, though {MANIFEST_FILE} lists it: "
                                     f"{_fix(directory)}") from None
    if expected is not None and hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise CorruptCheckpointError(
            f"{path} is damaged: its contents ({len(data)} bytes) differ from the sha256 saved with it in "
            f"{directory / MANIFEST_FILE} ({expected['bytes']} bytes). It was changed or damaged after "
            f"it was saved: {_fix(directory)}")
    return data


def read_files(directory: str | os.PathLike, names: Sequence[str], optional: Sequence[str] = (),
               hint: str = "") -> dict[str, bytes]:
    """The bytes of the files ``names``, and of those of ``optional`` that the last save wrote,
    from a folder saved by :func:`write_files_atomically`, each checked against its sha256.

    Raises :class:`CorruptCheckpointError` naming a file that is damaged or missing, and
    ``FileNotFoundError`` (ending with ``hint``: how to make one) if a name was not saved.
    A folder without a manifest (saved by bertmini before manifests, or by ``transformers``)
    is read as it is, unchecked. Changes nothing on disk.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file: give the folder a save wrote (the one that holds it?)")
    with runtime.locked(directory, exclusive=False):
        moved = {n: directory / t for n, t in (_read_journal(directory) or {}).items() if (directory / t).is_file()}
        manifest = moved.get(MANIFEST_FILE, directory / MANIFEST_FILE)
        listed = _read_manifest(manifest, directory) if manifest.is_file() else None
        found = {}
        for name in [*names, *optional]:
            path = moved.get(name, directory / name)
            saved = name in listed if listed is not None else path.is_file()
            if saved:
                found[name] = _read_checked(path, None if listed is None else listed[name], directory)
            elif name in names:
                why = "is missing" if listed is None else f"is not part of the last save into it ({MANIFEST_FILE})"
                raise FileNotFoundError(f"{directory / name} {why}{hint}")
    return found


def parse_json(data: bytes, path: Path) -> Any:
    """JSON from the bytes of a saved file, or an error that names the file and the fix."""
    try:
        return json.loads(data)
    except ValueError as e:
        raise CorruptCheckpointError(f"{path} is not valid JSON ({e}): {_fix(path.parent)}") from e


def parse_safetensors(data: bytes, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata in the bytes of a safetensors file (an 8-byte length, a JSON
    header, the raw tensors), or an error that names the file and the fix."""
    try:
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        return st_load(data), dict(header.get("__metadata__") or {})
    except Exception as e:  # safetensors' own error says neither which file nor what to do
        raise CorruptCheckpointError(f"{path} is not a readable safetensors file ({e}): "
                                     f"{_fix(path.parent)}") from e


def config_and_vocab_files(config: Any, tokenizer: Any) -> dict[str, bytes]:
    """``config.json`` and ``vocab.txt`` of a saved model, as ``BertConfig.to_json`` and
    ``BertTokenizer.save`` write them, for :func:`write_files_atomically`."""
    config_json = {"model_type": "bert", "architectures": ["BertModel"], **config.to_dict()}
    return {"config.json": json.dumps(config_json, indent=2).encode(),
            "vocab.txt": ("\n".join(tokenizer.ids_to_tokens) + "\n").encode("utf-8")}


def read_config_and_vocab(files: Mapping[str, bytes], directory: Path) -> tuple[Any, Any]:
    """``(BertConfig, BertTokenizer)`` from the bytes :func:`read_files` returned."""
    from .config import BertConfig
    from .tokenization import BertTokenizer

    config = BertConfig.from_dict(parse_json(files["config.json"], directory / "config.json"))
    try:
        lines = files["vocab.txt"].decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise CorruptCheckpointError(f"{directory / 'vocab.txt'} is not UTF-8 text ({e}): {_fix(directory)}") from e
    if lines and lines[-1] == "":
        lines.pop()
    return config, BertTokenizer([line.rstrip("\r") for line in lines])


# --------------------------------------------------------------------------- save and load


def check_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` and write and remove a small file in it, so that a folder that
    cannot hold checkpoints is found before training starts, not after its last step."""
    directory = Path(directory)
    probe = directory / _temporary_name("write-test", f"{os.getpid()}-{time.time_ns()}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_file(probe, b"")
        probe.unlink()
    except OSError as e:
        raise runtime.write_error(directory, e, "give a checkpoint_dir you may write to, with some "
                                  "free space") from e
    return directory


def checkpoint_files(model: nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                     step: int = 0, history: History | None = None,
                     extra: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The files of a checkpoint (the module docstring lists them) as ``{name: bytes}``."""
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
    return {MODEL_FILE: _model_file_bytes(model, {"format": "pt", "step": str(int(step))}),
            STATE_TENSORS_FILE: st_save(tensors, metadata={"format": "pt"}),
            STATE_JSON_FILE: json.dumps(state, indent=1, allow_nan=True).encode()}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, step: int = 0, history: History | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Save a checkpoint into the *directory* ``path`` (the files in the module docstring).

    ``extra`` is a dict of numbers, strings, lists, dicts and tensors. The save is all or
    nothing (:func:`write_files_atomically`): a crash leaves the previous checkpoint (or
    none), never a mix, and other files in ``path`` are left alone. Returns ``path``.
    """
    return write_files_atomically(path, checkpoint_files(model, optimizer, scheduler, step, history, extra))


def _read_state(path: Path, files: Mapping[str, bytes], optimizer, scheduler) -> dict[str, Any]:
    if STATE_JSON_FILE not in files:
        if optimizer is not None or scheduler is not None:
            raise FileNotFoundError(f"{path} holds model weights only ({STATE_JSON_FILE} missing): "
                                    "it cannot restore an optimizer or scheduler")
        return {"step": 0, "history": None, "extra": {}, "rng": None}
    if STATE_TENSORS_FILE not in files:
        raise CorruptCheckpointError(f"{path / STATE_TENSORS_FILE} is missing beside {STATE_JSON_FILE}: {_fix(path)}")
    tensors, _ = parse_safetensors(files[STATE_TENSORS_FILE], path / STATE_TENSORS_FILE)
    try:
        state = join_tensors(parse_json(files[STATE_JSON_FILE], path / STATE_JSON_FILE), tensors)
    except KeyError as e:
        raise CorruptCheckpointError(f"{path / STATE_JSON_FILE} names a tensor {e} that {STATE_TENSORS_FILE} "
                                     f"lacks: {_fix(path)}") from None
    if optimizer is not None and state.get("optimizer") is None:
        raise ValueError(f"{path} was saved without an optimizer state; load it without optimizer=")
    if scheduler is not None and state.get("scheduler") is None:
        raise ValueError(f"{path} was saved without a scheduler state; load it without scheduler=")
    return state


def _optimizer_state(path: Path, saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The saved optimizer state, checked against ``optimizer`` (groups, their sizes, each tensor's shape)."""
    have = [len(g["params"]) for g in saved["param_groups"]]
    want = [len(g["params"]) for g in optimizer.param_groups]
    if have != want:
        raise CheckpointMismatchError(
            f"{path}: the saved optimizer has parameter groups of {have} tensors, this optimizer {want}: "
            "build it as the saved run did, with make_optimizer(model, ...) over the same trainable "
            "parameters (the same ones frozen)")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    saved["state"] = {int(k): v for k, v in saved["state"].items()}
    wrong = [f"parameter {i} {k}: saved {tuple(v.shape)} vs {tuple(params[i].shape)}"
             for i, st in saved["state"].items() for k, v in st.items()
             if isinstance(v, torch.Tensor) and v.dim() > 0 and (i >= len(params) or v.shape != params[i].shape)]
    if wrong:
        raise CheckpointMismatchError(f"{path}: the optimizer state does not fit this optimizer's parameters:"
                                      + _listing("shape mismatches", wrong))
    for group, current in zip(saved["param_groups"], optimizer.param_groups):
        for k, v in current.items():  # JSON turned tuples (betas) into lists
            if isinstance(v, tuple) and isinstance(group.get(k), list):
                group[k] = tuple(group[k])
    return saved


def _check_scheduler(path: Path, saved: Mapping[str, Any], scheduler: Any) -> None:
    missing = sorted(set(scheduler.state_dict()) - set(saved))
    if missing:
        raise CheckpointMismatchError(f"{path}: the saved scheduler state lacks {missing}: it was saved from a "
                                      f"different kind of scheduler than {type(scheduler).__name__}")


def _checkpoint_folder(path: Path) -> Path:
    """``path``, or ``path/last`` if ``path`` is a ``train()`` checkpoint_dir."""
    def saved(p: Path) -> bool:
        return (p / MODEL_FILE).is_file() or (p / JOURNAL_FILE).is_file()

    return path / LAST if not saved(path) and saved(path / LAST) else path


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None) -> dict[str, Any]:
    """Load a directory written by :func:`save_checkpoint` into ``model`` (and the optimizer
    and scheduler if given); a ``train()`` ``checkpoint_dir`` means its latest checkpoint,
    ``<checkpoint_dir>/last``. Everything is checked before anything is changed: every file
    against its sha256, the model's keys and shapes (:class:`CheckpointMismatchError` names
    them), the optimizer's groups and the scheduler's state.

    Returns ``{"step", "history" (a History or None), "extra", "rng", "data"}``; the global
    random state is *not* restored here (``train(resume=True)`` does that).
    """
    path = _checkpoint_folder(Path(path))
    files = read_files(path, [MODEL_FILE], optional=[STATE_TENSORS_FILE, STATE_JSON_FILE],
                       hint=f" (no checkpoint at {path}: give the directory save_checkpoint wrote, "
                            "or a train() checkpoint_dir)")
    stored, metadata = parse_safetensors(files[MODEL_FILE], path / MODEL_FILE)
    state = _read_state(path, files, optimizer, scheduler)
    opt_state = None if optimizer is None else _optimizer_state(path, state["optimizer"], optimizer)
    if scheduler is not None:
        _check_scheduler(path, state["scheduler"], scheduler)
    aliases = parse_json(metadata.get("aliases", "{}").encode(), path / MODEL_FILE)
    weights = checked_state_dict(unwrap(model), stored, aliases=aliases, where=str(path))
    # everything is checked: only now change the model, the optimizer and the scheduler
    with torch.no_grad():
        unwrap(model).load_state_dict(weights, strict=True)
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
