"""What RoBERTa, ALBERT and ELECTRA share that BERT's modules do not already give.

* :class:`VariantConfig`: a :class:`bertmini.config.BertConfig` that knows its own
  ``model_type`` and the ``transformers`` config class it converts to;
* :func:`at_width`: BERT's embedding module built at the width ``E`` of a factorised
  embedding (ALBERT, ELECTRA) instead of the hidden size;
* :func:`check_embedding_size`: the error for an ``embedding_size`` that cannot work;

Nothing here is a new idea: each piece is BERT's, made to fit the variants' parameter names.
"""
from __future__ import annotations

import copy
import json
from typing import Any, ClassVar

from ..config import BertConfig


class VariantConfig(BertConfig):
    """A BERT config for one of BERT's relatives: the same fields and checks, plus the
    ``model_type`` a ``config.json`` must carry and the ``transformers`` config class
    :meth:`to_hf` builds. Subclasses are dataclasses that add their own fields."""

    model_type: ClassVar[str] = "bert"
    hf_config_class: ClassVar[str] = "BertConfig"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VariantConfig":
        if d.get("model_type", cls.model_type) != cls.model_type:
            raise ValueError(f"model_type={d['model_type']!r} is not {cls.model_type!r}; "
                             f"{cls.__name__} loads {cls.model_type} configs only")
        # BertConfig.from_dict refuses any model_type but "bert"; ours is checked above.
        return super().from_dict({**d, "model_type": "bert"})

    def hf_fields(self) -> dict[str, Any]:
        """The fields the ``transformers`` config takes (all of them, unless a subclass has its own)."""
        return self.to_dict()

    def to_hf(self, **extra: Any):
        import transformers

        return getattr(transformers, self.hf_config_class)(**self.hf_fields(), **extra)

    def to_json(self, path):
        from ..runtime import atomic_write_bytes

        d = {"model_type": self.model_type, **self.to_dict()}
        return atomic_write_bytes(path, json.dumps(d, indent=2).encode())


def check_embedding_size(config: BertConfig) -> None:
    """``embedding_size`` (the width ``E`` of the token embeddings) must be a positive int."""
    e = config.embedding_size
    if isinstance(e, bool) or not isinstance(e, int) or e <= 0:
        name = type(config).__name__
        raise ValueError(
            f"{name}.embedding_size must be a positive int, got {e!r}: it is the width E of the token "
            f"embeddings, which a linear layer projects up to hidden_size={config.hidden_size}. Use an E between "
            f"1 and hidden_size (ALBERT and ELECTRA-small use 128; E = hidden_size means no factorisation)."
        )


def at_width(config: BertConfig, width: int) -> BertConfig:
    """A copy of ``config`` whose ``hidden_size`` is ``width``, to build BERT's embedding
    module (``bertmini.model.BertEmbeddings``) at the width ``E`` of a factorised embedding.
    The copy is not validated again: ``E`` need not divide into the attention heads,
    because no attention is built from it."""
    narrow = copy.copy(config)
    narrow.hidden_size = width
    return narrow
