"""Move BERT weights between bertmini and ``transformers``, and load a real checkpoint.

Because bertmini names every parameter as ``transformers`` does, the mapping is
the identity: no renaming, no transposes. What this module adds is strictness,
through the book's one strict loader (:func:`bertmini.checkpoint.load_state_dict_strict`):
every key must be accounted for and every shape must match; otherwise the error
names the keys and shapes that do not fit, rather than loading half a model.

* :func:`from_hf`: a ``transformers`` ``BertModel``, ``BertForPreTraining`` or
  ``BertForMaskedLM``, or one of BERT's family (``RobertaModel``, ``RobertaForMaskedLM``,
  ``AlbertModel``, ``AlbertForPreTraining``, ``AlbertForMaskedLM``, ``ElectraModel``,
  ``ElectraForPreTraining``, ``ElectraForMaskedLM``) -> the bertmini model of the same name
  (:mod:`bertmini.model`, :mod:`bertmini.heads`, :mod:`bertmini.variants`).
* :func:`to_hf`: back again.
* :func:`load_pretrained`: a directory with ``config.json`` + ``model.safetensors``
  (e.g. ``bertmini.data.minilm_path()``) -> a bertmini ``BertModel``, offline.

Not handled: the task heads (classifiers, QA),
TensorFlow/Flax checkpoints, sharded or pickled (``.bin``) weight files.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from torch import nn

from .checkpoint import load_state_dict_strict
from .config import BertConfig
from .model import BertModel

# Every model from_hf / to_hf converts: the transformers class name (the same on both sides) ->
# (the bertmini module that defines it, the name of its config class there). Modules other than
# bertmini.model are imported only when needed.
MODELS = {
    "BertModel": ("bertmini.model", "BertConfig"),
    "BertForPreTraining": ("bertmini.heads", "BertConfig"),
    "BertForMaskedLM": ("bertmini.heads", "BertConfig"),
    "RobertaModel": ("bertmini.variants.roberta", "RobertaConfig"),
    "RobertaForMaskedLM": ("bertmini.variants.roberta", "RobertaConfig"),
    "AlbertModel": ("bertmini.variants.albert", "AlbertConfig"),
    "AlbertForPreTraining": ("bertmini.variants.albert", "AlbertConfig"),
    "AlbertForMaskedLM": ("bertmini.variants.albert", "AlbertConfig"),
    "ElectraModel": ("bertmini.variants.electra", "ElectraConfig"),
    "ElectraForPreTraining": ("bertmini.variants.electra", "ElectraConfig"),
    "ElectraForMaskedLM": ("bertmini.variants.electra", "ElectraConfig"),
}
HEAD_MODELS = ("BertForPreTraining", "BertForMaskedLM")  # BERT's models with the pretraining heads
# The encoders whose pooler is optional (add_pooling_layer=...); ELECTRA's has none.
POOLER_OPTIONAL = ("BertModel", "RobertaModel", "AlbertModel")
ACCEPTED = ", ".join(MODELS)


def _model_name(model, home) -> str | None:
    """The name in :data:`MODELS` of ``model``'s class, or of the nearest base class it
    derives from; ``home(name)`` is the class of that name it must really be."""
    for klass in type(model).__mro__:
        if klass.__name__ in MODELS and klass is home(klass.__name__):
            return klass.__name__
    return None


def _hf_aliases(hf_model) -> dict[str, str]:
    tied = getattr(hf_model, "_tied_weights_keys", None) or {}
    return dict(tied) if isinstance(tied, dict) else {}


def from_hf(hf_model) -> nn.Module:
    """A bertmini model with the config and weights of a ``transformers`` model.

    Each class of :data:`MODELS` becomes the bertmini class of the same name:
    ``transformers.BertModel`` -> :class:`bertmini.model.BertModel` (with a pooler iff
    the original has one); ``BertForPreTraining`` / ``BertForMaskedLM`` ->
    ``bertmini.heads``; the RoBERTa, ALBERT and ELECTRA classes -> ``bertmini.variants``.
    The result is in the same train/eval mode.
    """
    if not isinstance(hf_model, nn.Module) or not hasattr(hf_model, "config"):
        what = "a state dict" if isinstance(hf_model, dict) else f"a {type(hf_model).__name__}"
        raise TypeError(f"from_hf takes a transformers model ({ACCEPTED}), got {what}; "
                        "pass the model itself, e.g. from_hf(transformers.BertModel.from_pretrained(path)). "
                        "Weights on disk load with bertmini.hf.load_pretrained(directory).")
    import transformers

    name = _model_name(hf_model, lambda n: getattr(transformers, n, None))
    if name is None:
        raise TypeError(f"from_hf takes a transformers {ACCEPTED}; got {type(hf_model).__name__}")
    module = importlib.import_module(MODELS[name][0])
    config = getattr(module, MODELS[name][1]).from_hf(hf_model.config)
    if name in POOLER_OPTIONAL:
        model = getattr(module, name)(config, add_pooling_layer=hf_model.pooler is not None)
    else:
        model = getattr(module, name)(config)
    load_state_dict_strict(model, hf_model.state_dict(), source=name, aliases=_hf_aliases(hf_model))
    return model.train(hf_model.training)


def to_hf(model: nn.Module):
    """The ``transformers`` twin of a bertmini model of :data:`MODELS` (same class name), with
    the same weights (attention implementation as ``transformers`` chooses). An ALBERT with
    bertmini's ``share_attention_only`` becomes a library ALBERT with one layer per step
    (the shared attention copied into each): the same outputs, without the sharing."""
    import transformers

    name = _model_name(model, lambda n: getattr(importlib.import_module(MODELS[n][0]), n))
    if name is None:
        raise TypeError(f"to_hf takes a bertmini {ACCEPTED}; got {type(model).__module__}.{type(model).__name__}")
    hf_class = getattr(transformers, name)
    if name in POOLER_OPTIONAL:
        hf = hf_class(model.config.to_hf(), add_pooling_layer=model.pooler is not None)
    else:
        hf = hf_class(model.config.to_hf())
    own = model.state_dict()
    aliases = {v: k for k, v in _hf_aliases(hf).items()}  # the reverse direction
    aliases.update(_hf_aliases(hf))
    load_state_dict_strict(hf, own, source=f"bertmini {name}", aliases=aliases)
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
