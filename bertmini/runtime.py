"""Where and how the book runs: device, profile, seeds, cache, results.

Every chapter starts with the same three calls::

    from bertmini import runtime
    runtime.seed_everything(0)
    print(runtime.device(), runtime.profile())

The *profile* changes only sizes and step counts, never what a chapter teaches:
``cpu`` keeps each notebook within a few minutes on a 2-core laptop, ``gpu``
trains larger models for longer. Set ``BERTMINI_PROFILE`` to choose; the default
is ``gpu`` when CUDA is present and ``cpu`` otherwise.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

PROFILES = ("cpu", "gpu")
T = TypeVar("T")


def device() -> torch.device:
    """The best device present: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def profile() -> str:
    """``BERTMINI_PROFILE`` if set (``cpu`` or ``gpu``), else ``gpu`` with CUDA, else ``cpu``."""
    value = os.environ.get("BERTMINI_PROFILE", "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in PROFILES:
        raise ValueError(
            f"BERTMINI_PROFILE={value!r} is not a profile; use one of {PROFILES}, "
            "e.g. `export BERTMINI_PROFILE=cpu`, or unset it to choose by hardware."
        )
    return value


def by_profile(cpu: T, gpu: T, profile_name: str | None = None) -> T:
    """Pick a size or step count for ``profile_name`` (default: the current profile):
    ``by_profile(cpu=500, gpu=20_000)``."""
    name = profile_name or profile()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; use one of {PROFILES}")
    return gpu if name == "gpu" else cpu


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch generator seeded the same."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def can_check_values(tensor: torch.Tensor) -> bool:
    """Whether reading ``tensor``'s values is free: on a CPU it is; on a GPU it waits for
    every queued kernel (a host sync), which would stall each step. Value-range checks of
    inputs and labels run where this is True; shapes and dtypes are checked everywhere."""
    return tensor.device.type == "cpu"


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """``with eval_mode(model):`` runs the block in eval mode under ``torch.no_grad()``
    and puts the model back in the mode it was in, even if the block raises."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def use_available_cores() -> int:
    """Let torch use as many threads as this process may run on (``os.sched_getaffinity``:
    a container or ``taskset`` may allow fewer cores than the machine has), never more;
    ``OMP_NUM_THREADS``, if set, wins. Two jobs with a thread per core each spin against
    each other, so more threads than cores only slows training. Returns the thread count."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


def file_mode(directory: bool = False) -> int:
    """The mode a new file (or directory) gets from the umask, as ``open()`` and ``mkdir``
    give it. ``tempfile`` creates 0600 files and 0700 folders; a cache filled before a
    workshop must stay readable to the attendees, so every temporary that is renamed into
    place gets this mode first."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _cache_root() -> Path:
    return Path(os.environ.get("BERTMINI_CACHE") or os.path.join(Path.home(), ".cache", "bertmini")).expanduser()


def cache_dir() -> Path:
    """``BERTMINI_CACHE`` if set, else ``~/.cache/bertmini``; created on first use.

    A cache filled before a workshop may be shared read-only: everything in it is written
    with the umask's mode, so others can read it, and loading never writes."""
    return make_dir(_cache_root())


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def cache_name(name: str, what: str = "name") -> str:
    """Check a name that becomes a file or folder in the cache (a chapter's results, a
    preset): letters, digits, ``.``, ``_`` and ``-``, no ``/`` and no ``..``, so it never
    leads outside the cache."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{what} {name!r} cannot name a file in the cache: use letters, digits, '.', "
                         "'_' and '-' only (no '/', no '..'), e.g. '05a_classification'")
    return name


def write_error(path: str | os.PathLike, error: OSError, fix: str = "write to a folder you may write to, "
                "with some free space") -> OSError:
    """``error`` (same type, so ``except PermissionError`` still works) with the path and the
    fix in its message; inside the cache the fix is to point ``BERTMINI_CACHE`` elsewhere."""
    path = Path(path)
    root = _cache_root()
    if path == root or root in path.parents:
        fix = (f"the cache {root} cannot be written (shared read-only, or full?): set BERTMINI_CACHE to "
               "a folder of your own, e.g. `export BERTMINI_CACHE=$HOME/bertmini-cache`")
    return type(error)(error.errno, f"cannot write {path} ({error.strerror or error}): {fix}")


def make_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p`` (with the umask's mode); a folder that cannot be made is named with the fix."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from e
    return path


@contextlib.contextmanager
def locked(directory: str | os.PathLike, exclusive: bool = True):
    """Hold a lock on a folder while the block runs, across processes (POSIX ``flock`` on the
    folder itself; shared for readers, exclusive for writers). Where there is none (Windows,
    some network file systems) the block runs unguarded."""
    fd = None
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        pass
    try:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing it releases the lock


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash
    never leaves a half-written file behind."""
    path = Path(path)
    make_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from e
        raise
    return path


def _results_path(chapter: str) -> Path:
    return cache_dir() / "results" / f"{cache_name(chapter, 'chapter')}.json"


def save_results(chapter: str, results: dict[str, Any]) -> Path:
    """Merge a chapter's headline numbers into ``<cache>/results/<chapter>.json``. The read,
    merge and replace hold a lock on the folder, so two processes saving numbers of one
    chapter at once keep every key."""
    path = _results_path(chapter)
    with locked(make_dir(path.parent)):
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(results)
        return atomic_write_bytes(path, json.dumps(old, indent=2, sort_keys=True).encode())


def load_results(chapter: str) -> dict[str, Any]:
    """The numbers a chapter saved with :func:`save_results` (empty if none yet)."""
    path = _results_path(chapter)
    return json.loads(path.read_text()) if path.exists() else {}


def glue(name: str, value: Any, display: bool = False) -> Any:
    """``myst_nb.glue`` for a number the prose quotes: NumPy and torch scalars become
    plain Python numbers first (the book formats ``{glue:text}`name:.1%` `` from their
    text, which for ``np.float64(0.15)`` would fail). Returns the plain value.
    Where myst-nb is not installed (Colab), it writes the output ``myst_nb.glue`` writes."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        myst_glue = _glue_without_myst_nb

    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    myst_glue(name, value, display=display)
    return value


def _glue_without_myst_nb(name: str, value: Any, display: bool = True) -> None:
    """What ``myst_nb.glue`` (myst-nb 1.x) displays: the value's mimebundle, hidden under
    ``application/papermill.record/`` unless ``display``, named in the output's metadata."""
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    bundle, metadata = format_display_data(value)
    prefix = "" if display else "application/papermill.record/"
    metadata["scrapbook"] = dict(name=name, mime_prefix=prefix)
    ipy_display({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)
