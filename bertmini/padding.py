"""Padding: rows of different lengths as one rectangular tensor, and the mask that says which cells are real.

Every batch in the book is built this way: the tokenizer's ``encode_batch``, the
masked-LM collator, the NSP pairs and the fine-tuning ``collate`` all call
:func:`pad_rows`; the attention mask is :func:`length_mask` of the same lengths.
"""
from __future__ import annotations

from typing import Sequence

import torch


def check_multiple_of(multiple_of: int | None) -> int | None:
    """``pad_to_multiple_of`` itself, if it is None or a positive int (8 suits tensor cores)."""
    if multiple_of is not None and (isinstance(multiple_of, bool) or not isinstance(multiple_of, int)
                                    or multiple_of < 1):
        raise ValueError(f"pad_to_multiple_of must be a positive int (e.g. 8) or None, got {multiple_of!r}")
    return multiple_of


def padded_length(lengths: Sequence[int], length: int | None = None, multiple_of: int | None = None) -> int:
    """The width of the padded batch: ``length`` if given, else the longest row,
    rounded up to a multiple of ``multiple_of`` (tensor cores like multiples of 8)."""
    check_multiple_of(multiple_of)
    width = max(lengths, default=0) if length is None else length
    if length is not None and max(lengths, default=0) > length:
        raise ValueError(f"a row of {max(lengths)} does not fit in a padded length of {length}; "
                         "truncate the rows or pad to a larger length")
    if multiple_of:
        width = -(-width // multiple_of) * multiple_of
    return width


def pad_rows(rows: Sequence[Sequence[int] | torch.Tensor], value: int | float, length: int | None = None,
             multiple_of: int | None = None, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``(len(rows), width)`` tensor of ``dtype``: each row on the left, ``value`` after it. Rows
    that are ``(len, d)`` tensors (a vector per token, e.g. a teacher's hidden states) give
    ``(len(rows), width, d)``."""
    width = padded_length([len(r) for r in rows], length, multiple_of)
    per_token = tuple(rows[0].shape[1:]) if len(rows) and isinstance(rows[0], torch.Tensor) else ()
    out = torch.full((len(rows), width, *per_token), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.as_tensor(row, dtype=dtype)
    return out


def length_mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    """``(len(lengths), width)`` long tensor: 1 over the first ``lengths[i]`` cells of row i, 0 after."""
    return (torch.arange(width)[None, :] < torch.as_tensor(list(lengths), dtype=torch.long)[:, None]).long()
