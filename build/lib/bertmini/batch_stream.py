"""The batches a training run reads: epoch after epoch, under their own random state.

``train()`` asks :class:`BatchStream` for the next micro-batch and never sees an
epoch boundary. The batches are drawn under the stream's *own* random state (seeded
from the run's seed), so the shuffle order and any random masking in a collator
depend only on the seed and the position in the stream: not on dropout, not on an
evaluation, not on a restart. :meth:`BatchStream.state` and
:meth:`BatchStream.load_state` save and restore that position, which makes resume exact.

``train_data`` may be anything iterated once per epoch: a ``DataLoader``, a list of
batches, an object whose ``__iter__`` starts a new epoch, or a zero-argument callable
returning a fresh iterator. Not handled: collators that draw random numbers on the
GPU, and ``DataLoader(persistent_workers=True)``, whose workers carry their random
state from epoch to epoch where a resume cannot reach it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from .checkpoint import rng_from_tree, rng_state, rng_to_tree, seeded_rng_state, set_rng_state


class BatchStream:
    """Micro-batches forever, epoch after epoch, drawn under the stream's own random state."""

    def __init__(self, train_data: Any, seed: int):
        if callable(train_data) and not hasattr(train_data, "__iter__"):
            self._make = train_data
        elif isinstance(train_data, Iterable):
            if iter(train_data) is train_data:
                raise TypeError(
                    "train_data is a one-shot iterator (e.g. a generator), which cannot be replayed for a "
                    "second epoch or a resume; pass a list, a DataLoader, or a function returning a fresh "
                    "iterator"
                )
            self._make = lambda: iter(train_data)
        else:
            raise TypeError(f"train_data must be an iterable of batches or a callable returning one, "
                            f"got {type(train_data).__name__}")
        self.sampler = getattr(train_data, "sampler", None)
        self.epoch, self.index = 0, 0
        self.rng = seeded_rng_state(seed)
        self.epoch_rng: dict[str, Any] | None = None
        self._it = None

    @contextlib.contextmanager
    def _own_rng(self):
        outer = rng_state()
        set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = rng_state()
            set_rng_state(outer)

    def _start_epoch(self) -> None:
        self.epoch_rng = rng_state()
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        self._it = self._make()

    def __next__(self) -> Mapping[str, Any]:
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
                if not isinstance(batch, Mapping):
                    raise TypeError(f"each batch must be a dict of tensors passed as model(**batch), got "
                                    f"{type(batch).__name__}; give the DataLoader a collate_fn that returns a dict")
                return batch

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "rng": rng_to_tree(self.rng),
                "epoch_rng": None if self._it is None else rng_to_tree(self.epoch_rng)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Return to a saved position: replay the epoch's start and skip the batches already used."""
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._it = None
        if state.get("epoch_rng") is not None:
            self.rng = rng_from_tree(state["epoch_rng"])
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
        self.rng = rng_from_tree(state["rng"])
