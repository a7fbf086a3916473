"""What every lab checker shares: the error, the case runner, value printing, references.

:class:`Check` calls the learner's function on one case at a time and counts the cases; a
``NotImplementedError`` passes through unchanged, any other exception becomes a
:class:`LabCheckError` naming the case. :func:`diagnose` turns "wrong" into "wrong in the usual
way": it compares the learner's result with the results of known mistakes and returns the hint
of the one it equals.
"""
from __future__ import annotations

import contextlib
import functools
import math
import textwrap
from collections.abc import Callable, Mapping

import torch

SDS = 6.0  # statistical checks allow this many standard deviations


class LabCheckError(AssertionError):
    """The learner's function got a case wrong: the message names the case, what was expected,
    what came back and a hint."""



class Check:
    """One run of a checker: calls the learner's function, counts and reports the cases."""

    def __init__(self, name: str, fn: Callable):
        if not callable(fn):
            raise TypeError(f"{name} takes your function itself: {name}(my_function), not the "
                            f"{type(fn).__name__} it returns (drop the parentheses after its name).")
        self.name, self.fn, self.cases = name, fn, 0

    def call(self, case: str, *args, hint: str = "", **kwargs):
        """The learner's function on one case; its errors become a :class:`LabCheckError`."""
        __tracebackhide__ = True
        try:
            return self.fn(*args, **kwargs)
        except NotImplementedError:
            raise  # not written yet: the learner sees the lab's own message
        except Exception as error:
            got = f"your function raised {type(error).__name__}: {error}"
            raise LabCheckError(self.message(self.cases + 1, case, "a return value", got,
                                             hint or self.generic_hint())) from error

    def expect(self, ok, case: str, expected: str, got: str, hint: str) -> None:
        """Count one case; fail with the full message if ``ok`` is false."""
        __tracebackhide__ = True
        self.cases += 1
        if not ok:
            raise LabCheckError(self.message(self.cases, case, expected, got, hint)) from None

    def message(self, number: int, case: str, expected: str, got: str, hint: str) -> str:
        return (f"{self.name} failed on case {number}: {case}\n  expected: {expected}\n"
                f"  got:      {got}\n  hint:     {hint}")

    def generic_hint(self) -> str:
        return ("the traceback above this message ends at the line of your function that failed; "
                "run your function on this case by hand to see why")

    def passed(self, detail: str = "") -> None:
        """One line, and the detail under it in lines that fit the page."""
        print(f"{self.name}: {self.cases:,} cases passed")
        if detail:
            print(textwrap.fill(detail, 80, initial_indent="  ", subsequent_indent="  "))


def show(x, limit: int = 240) -> str:
    """A short printable form of a value: tensors with their shape, dtype and first values."""
    if isinstance(x, torch.Tensor):
        values = x.detach().cpu().flatten()[:10].tolist()
        text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)
        more = ", ..." if x.numel() > 10 else ""
        return f"tensor of shape {tuple(x.shape)}, {str(x.dtype).replace('torch.', '')}: [{text}{more}]"
    text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def diagnose(got: torch.Tensor, mistakes: Mapping[str, Callable[[], torch.Tensor]], default: str,
              atol: float = 1e-4) -> str:
    """The hint of the first mistake whose result ``got`` equals, else ``default``."""
    for hint, result in mistakes.items():
        try:
            wrong = result()
            if wrong.shape == got.shape and torch.allclose(got.float(), wrong.float(), atol=atol, rtol=1e-4):
                return hint
        except Exception:  # a mistake that does not even apply to this case
            continue
    return default


def rate_ok(count: int, n: int, p: float) -> bool:
    """``count`` successes out of ``n`` fit a rate ``p`` within ``SDS`` standard deviations."""
    if n == 0:
        return True
    return abs(count / n - p) <= SDS * math.sqrt(p * (1 - p) / n) + 1e-9


def as_tensor(check: Check, case: str, value, what: str, shape, hint: str) -> torch.Tensor:
    check.expect(isinstance(value, torch.Tensor), case, f"{what}: a torch.Tensor", show(value), hint)
    check.expect(tuple(value.shape) == tuple(shape), case, f"{what} of shape {tuple(shape)}",
                 f"shape {tuple(value.shape)}", hint)
    return value


def same(a, b) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and bool((a == b).all())


# the references the checkers compare with, loaded once


@functools.lru_cache(maxsize=1)
def bert_tokenizer():
    from .. import data
    from ..tokenization import BertTokenizer

    return BertTokenizer.from_vocab(data.minilm_vocab_path())


@functools.lru_cache(maxsize=1)
def hf_tokenizer():
    from transformers import BertTokenizerFast

    from .. import data

    # vocab=, not vocab_file=: transformers 5 ignores vocab_file (CONTRIBUTING's gotchas)
    return BertTokenizerFast(vocab=str(data.minilm_vocab_path()), do_lower_case=True)


@contextlib.contextmanager
def quiet_transformers():
    """No "Loading weights" progress bar from ``from_pretrained`` under a checker's one line."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def wiki_texts(n: int) -> list[str]:
    from .. import data

    return [a.text for a in data.wiki_articles("validation")[:n]]


