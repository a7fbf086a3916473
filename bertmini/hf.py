"""Move BERT weights between bertmini and ``transformers``, and load a real checkpoint.

Because bertmini names every parameter as ``transformers`` does, the mapping is
the identity: no renaming, no transposes. What this module adds is strictness,
through the book's one strict loader (:func:`bertmini.checkpoint.load_state_dict_strict`):
every key must be accounted for and every shape must match; otherwise the error
names the keys and shapes that do not fit, rather than loading half a model.

* :func:`from_hf`: a ``transformers`` ``BertModel``, ``BertForPreTraining`` or
  ``BertForMaskedLM`` -> the bertmini model of the same name.
* :func:`to_hf`: back again.
* :func:`load_pretrained`: a directory with ``config.json`` + ``model.safetensors``
  (e.g. ``bertmini.data.minilm_path()``) -> a bertmini ``BertModel``, offline.

Not handled: the task heads (classifiers, QA),
TensorFlow/Flax checkpoints, sharded or pickled (``.bin``) weight files.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_state_dict_strict
from .config import BertConfig
from .model import BertModel

# Models with the pretraining heads: same class name on both sides; the bertmini
# ones live in ``bertmini.heads`` (chapter 4) and are imported only when needed.
HEAD_MODELS = ("BertForPreTraining", "BertForMaskedLM")


def _hf_aliases(hf_model) -> dict[str, str]:
    tied = getattr(hf_model, "_tied_weights_keys", None) or {}
    return dict(tied) if isinstance(tied, dict) else {}


def from_hf(hf_model) -> nn.Module:
    """A bertmini model with the config and weights of a ``transformers`` model.

    ``transformers.BertModel`` -> :class:`bertmini.model.BertModel` (with a pooler iff
    the original has one); ``transformers.BertForPreTraining`` / ``BertForMaskedLM`` ->
    ``bertmini.heads.BertForPreTraining`` / ``BertForMaskedLM``. The result is in the
    same train/eval mode.
    """
    if not isinstance(hf_model, nn.Module) or not hasattr(hf_model, "config"):
        what = "a state dict" if isinstance(hf_model, dict) else f"a {type(hf_model).__name__}"
        raise TypeError(f"from_hf takes a transformers model (BertModel, {' or '.join(HEAD_MODELS)}), got {what}; "
                        "pass the model itself, e.g. from_hf(transformers.BertModel.from_pretrained(path)). "
                        "Weights on disk load with bertmini.hf.load_pretrained(directory).")
    import transformers

    config = BertConfig.from_hf(hf_model.config)
    name = type(hf_model).__name__
    if name in HEAD_MODELS and isinstance(hf_model, getattr(transformers, name)):
        from . import heads

        model = getattr(heads, name)(config)
    elif isinstance(hf_model, transformers.BertModel):
        model = BertModel(config, add_pooling_layer=hf_model.pooler is not None)
    else:
        raise TypeError(
            f"from_hf takes a transformers BertModel, {' or '.join(HEAD_MODELS)}, got {name}"
        )
    load_state_dict_strict(model, hf_model.state_dict(), source=type(hf_model).__name__, aliases=_hf_aliases(hf_model))
    return model.train(hf_model.training)


def to_hf(model: nn.Module):
    """The ``transformers`` twin of a bertmini ``BertModel``, ``BertForPreTraining`` or
    ``BertForMaskedLM``, with the same weights (attention implementation as
    ``transformers`` chooses)."""
    import transformers

    name = type(model).__name__
    if isinstance(model, BertModel):
        hf = transformers.BertModel(model.config.to_hf(), add_pooling_layer=model.pooler is not None)
    elif name in HEAD_MODELS and type(model).__module__ == "bertmini.heads":
        hf = getattr(transformers, name)(model.config.to_hf())
    else:
        raise TypeError(f"to_hf takes a bertmini BertModel, {' or '.join(HEAD_MODELS)}, got {name}")
    own = model.state_dict()
    aliases = {v: k for k, v in _hf_aliases(hf).items()}  # the reverse direction
    aliases.update(_hf_aliases(hf))
    load_state_dict_strict(hf, own, source=f"bertmini {type(model).__name__}", aliases=aliases)
    # Loading may re-tie; make sure the tied copies really are the loaded weights.
    if hasattr(hf, "tie_weights"):
        hf.tie_weights()
    return hf.train(model.training)


def load_pretrained(directory: str | os.PathLike, add_pooling_layer: bool = True) -> BertModel:
    """A bertmini :class:`BertModel` from ``directory/config.json`` and
    ``directory/model.safetensors``, in eval mode. Works offline; nothing is downloaded.

    A checkpoint saved from a model with heads (keys prefixed ``bert.``) loads its
    encoder; the head weights (``cls.*``) are then left out, since ``BertModel``
    has no head. Any other missing, unexpected or misshapen key is an error that names it.
    A folder bertmini saved is read as :func:`bertmini.checkpoint.read_files` reads it: each
    file checked against its sha256, an interrupted save read as its last complete one.
    """
    from .checkpoint import parse_json, parse_safetensors, read_files

    directory = Path(directory)
    weights_path = directory / "model.safetensors"
    files = read_files(directory, ["config.json", "model.safetensors"],
                       hint="; load_pretrained needs a directory with config.json and model.safetensors "
                            "(for the book's real model use bertmini.data.minilm_path())")
    config = BertConfig.from_dict(parse_json(files["config.json"], directory / "config.json"))
    state, _ = parse_safetensors(files["model.safetensors"], weights_path)
    if any(k.startswith("bert.") for k in state):
        state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    if not add_pooling_layer:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    model = BertModel(config, add_pooling_layer=add_pooling_layer)
    load_state_dict_strict(model, state, source="checkpoint", where=str(weights_path))
    return model.eval()
