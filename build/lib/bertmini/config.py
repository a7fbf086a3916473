"""The shape of a BERT model: one dataclass, five named sizes, checked on creation.

Field names are those of ``transformers.BertConfig`` so a real ``config.json``
loads as it is and a config converts both ways (:meth:`BertConfig.from_hf`,
:meth:`BertConfig.to_hf`).

Presets:

=========  ======  ======  =====  ============  ==========================
name       layers  hidden  heads  intermediate  source
=========  ======  ======  =====  ============  ==========================
``tiny``   2       128     2      512           Google's small-BERT release
``mini``   4       256     4      1024          Google's small-BERT release
``small``  4       512     8      2048          Google's small-BERT release
``base``   12      768     12     3072          the BERT paper (~110M)
``large``  24      1024    16     4096          the BERT paper (~340M)
=========  ======  ======  =====  ============  ==========================

Not handled: relative position embeddings (``position_embedding_type``), decoder
use (``is_decoder``, cross-attention, caches) and classifier options; bertmini is
the encoder of the paper only.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The label every loss in the book skips: unmasked positions (MLM), padding, [CLS]/[SEP] and
# later sub-tokens (tagging). It is the default ``ignore_index`` of torch's cross_entropy.
IGNORE_INDEX = -100

# The activations BERT checkpoints use. "gelu" is the exact erf form, as in
# transformers; "gelu_new" is the tanh approximation of the original TF code.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "tanh")

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
}


@dataclass
class BertConfig:
    """Every size and rate of a BERT encoder. Defaults are BERT-base's."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field that is wrong and how to fix it."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"BertConfig.{name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"BertConfig.{name} must be positive, got {value}")
        if self.hidden_size % self.num_attention_heads != 0:
            divisors = [h for h in range(1, self.hidden_size + 1) if self.hidden_size % h == 0]
            near = sorted(divisors, key=lambda h: abs(h - self.num_attention_heads))[:3]
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}: each head gets hidden_size / heads dimensions. "
                f"Use a head count that divides it, e.g. {sorted(near)}."
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {p!r}")
        for name, usual in (("layer_norm_eps", 1e-12), ("initializer_range", 0.02)):
            v = getattr(self, name)
            # nan is not <= 0 and inf is > 0: only isfinite stops them, and either makes every output NaN.
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"BertConfig.{name} must be a positive finite number (BERT uses {usual}), got {v!r}")
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id!r} must be an id inside the vocabulary [0, {self.vocab_size})"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    # ----------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "BertConfig":
        """A named size (``tiny mini small base large``), with any field overridden:
        ``BertConfig.preset("mini", vocab_size=8000)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown BertConfig field(s) {sorted(unknown)}; fields are {cls.field_names()}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    # ------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BertConfig":
        """Take the fields bertmini knows from a dict (e.g. a ``config.json``), ignore
        bookkeeping keys, and refuse settings bertmini does not implement."""
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"model_type={d['model_type']!r} is not 'bert'; bertmini loads BERT configs only")
        pos = d.get("position_embedding_type", "absolute")
        if pos not in (None, "absolute"):
            raise ValueError(f"position_embedding_type={pos!r} is not supported; bertmini has absolute positions only")
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError("decoder configs (is_decoder / add_cross_attention) are not supported")
        kwargs = {k: d[k] for k in cls.field_names() if k in d and d[k] is not None}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "BertConfig":
        """Read a ``config.json`` as written by ``transformers`` (or by :meth:`to_json`)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"no config file at {path}; pass a config.json or the directory holding it")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(d)

    def to_json(self, path: str | os.PathLike) -> Path:
        from .runtime import atomic_write_bytes

        d = {"model_type": "bert", "architectures": ["BertModel"], **self.to_dict()}
        return atomic_write_bytes(path, json.dumps(d, indent=2).encode())

    @classmethod
    def from_hf(cls, hf_config: Any) -> "BertConfig":
        """From a ``transformers.BertConfig``."""
        return cls.from_dict(hf_config.to_dict())

    def to_hf(self, **extra: Any):
        """A ``transformers.BertConfig`` with the same fields (``extra`` passed through)."""
        from transformers import BertConfig as HFBertConfig

        return HFBertConfig(**self.to_dict(), **extra)
