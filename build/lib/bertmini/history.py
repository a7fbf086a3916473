"""What a training run did, step by step: the numbers behind every loss curve in the book.

::

    history = train(model, batches, config)
    steps, losses = history.smoothed("mlm_loss", window=25)
    history.eval_series("mlm_accuracy")
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
