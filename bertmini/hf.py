"""Move BERT weights between bertmini and ``transformers``, and load a real checkpoint.

Because bertmini names every parameter as ``transformers`` does, the mapping is
the identity: no renaming, no transposes. What this module adds is strictness,
through the book's one strict loader (:func:`bertmini.checkpoint.load_state_dict_strict`):
every key must be accounted for and every shape must match; otherwise the error
names the keys and shapes that do not fit, rather than loading half a model.

* :func:`from_hf`: a ``transformers`` ``BertModel``, ``BertForPreTraining`` or
  ``BertForMaskedLM``, or one of BERT's family (``RobertaModel``, ``RobertaForMaskedLM``,
  ``AlbertModel``, ``AlbertForPreTraining``, ``AlbertForMaskedLM``, ``ElectraModel``,
  ``ElectraForPreTraining``, ``ElectraForMaskedLM``, ``DistilBertModel``,
  ``DistilBertForMaskedLM``), or a task head of chapter 5
  (``BertForSequenceClassification``, ``...ForTokenClassification``, ``...ForQuestionAnswering``)
  -> the bertmini model of the same name (:mod:`bertmini.model`, :mod:`bertmini.heads`,
  :mod:`bertmini.variants`, :mod:`bertmini.task_heads`).
* :func:`to_hf`: back again.
* :func:`load_pretrained`: a directory with ``config.json`` + ``model.safetensors``
  (e.g. ``bertmini.data.minilm_path()``) -> a bertmini ``BertModel``, offline.
* :func:`export` (chapter 6d): a bertmini BERT (encoder, pretraining or masked-LM model, or a
  task head of chapter 5) and its tokenizer -> a directory ``transformers`` loads offline
  (``AutoTokenizer``, ``AutoModelFor...``, ``pipeline``), with a model card.
* :func:`load` (chapter 6d): such a directory, or one ``transformers`` saved, back into
  bertmini: ``(model, tokenizer, labels)``.

Not handled: TensorFlow/Flax checkpoints, sharded or pickled (``.bin``) weight files, cased
tokenizers (bertmini's is BERT's uncased one), a ``classifier_dropout`` other than the
hidden dropout (bertmini's heads use ``hidden_dropout_prob``; it matters only in training),
and the family's directories in :func:`export` / :func:`load` (BERT's classes only).
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from .checkpoint import load_state_dict_strict
from .config import BertConfig
from .model import BertModel
from .tokenization import BertTokenizer

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
    "DistilBertModel": ("bertmini.variants.distilbert", "DistilBertConfig"),
    "DistilBertForMaskedLM": ("bertmini.variants.distilbert", "DistilBertConfig"),
    "BertForSequenceClassification": ("bertmini.task_heads", "BertConfig"),
    "BertForTokenClassification": ("bertmini.task_heads", "BertConfig"),
    "BertForQuestionAnswering": ("bertmini.task_heads", "BertConfig"),
}
HEAD_MODELS = ("BertForPreTraining", "BertForMaskedLM")  # BERT's models with the pretraining heads
# The encoders whose pooler is optional (add_pooling_layer=...); ELECTRA's has none.
POOLER_OPTIONAL = ("BertModel", "RobertaModel", "AlbertModel")
# The heads sized by their labels (num_labels; transformers keeps the names in config.json's id2label).
LABELLED = ("BertForSequenceClassification", "BertForTokenClassification")
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
    ``bertmini.heads``; the RoBERTa, ALBERT, ELECTRA and DistilBERT classes -> ``bertmini.variants``;
    the task heads (``BertForSequenceClassification``, ``BertForTokenClassification``,
    ``BertForQuestionAnswering``) -> ``bertmini.task_heads``, with the library's ``num_labels``.
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
    elif name in LABELLED:
        model = getattr(module, name)(config, num_labels=hf_model.config.num_labels)
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
    elif name in LABELLED:
        hf = hf_class(model.config.to_hf(num_labels=model.num_labels))
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


# --------------------------------------------------------------------------- whole directories
# What pipeline(...) builds from each exported class (the model card's pipeline_tag).
PIPELINE_TAGS = {"BertModel": "feature-extraction", "BertForPreTraining": "fill-mask", "BertForMaskedLM": "fill-mask",
                 "BertForSequenceClassification": "text-classification",
                 "BertForTokenClassification": "token-classification",
                 "BertForQuestionAnswering": "question-answering"}


def export(model: nn.Module, tokenizer, directory: str | os.PathLike, labels: Sequence[str] | None = None, *,
           data: str | None = None, results: Sequence[str] = ()) -> Path:
    """Write ``model`` and its ``tokenizer`` as a directory ``transformers`` loads offline:

    * ``config.json``: the library's config, with ``architectures`` (the class to build) and, for a
      classifier, ``id2label`` / ``label2id`` from ``labels`` (default ``LABEL_0``, ``LABEL_1``, ...);
    * ``model.safetensors``: every weight under the library's name, a tied weight once;
    * ``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json``: see :func:`tokenizer_files`;
    * ``README.md``: a model card (:func:`model_card`): what it is, the data card of ``data`` (a key
      of ``bertmini.data.CARDS``) and the numbers of the results files ``results`` (chapter names).

    The model is one of BERT's classes in :data:`MODELS`; a ``BertForPreTraining`` is written whole
    (``pipeline("fill-mask")`` then skips its NSP head; ``heads.BertForMaskedLM.from_pretraining``
    leaves it out first). Written all or nothing by :func:`bertmini.checkpoint.write_files_atomically`:
    files already in ``directory`` that are not among these are left as they are (stale weights of
    another format, ``pytorch_model.bin``, say, are not removed).
    """
    from safetensors.torch import save as st_save

    from .checkpoint import write_files_atomically

    hf_model = to_hf(model)  # the library's twin: its config class and its parameter names
    name = type(hf_model).__name__
    _check_export(model, tokenizer, labels, name)
    config = hf_model.config
    config.architectures = [name]
    if name in LABELLED:
        names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(model.num_labels)]
        config.id2label = dict(enumerate(names))
        config.label2id = {label: i for i, label in enumerate(names)}
    tied = _hf_aliases(hf_model)  # e.g. the MLM decoder *is* the word embeddings: saved once, re-tied on load
    weights = {k: v.detach().cpu().contiguous() for k, v in hf_model.state_dict().items() if k not in tied}
    card = model_card(name, config, model_parameters=sum(p.numel() for p in model.parameters()),
                      data=data, results=results)
    files = {"config.json": config.to_json_string().encode(),
             "model.safetensors": st_save(weights, metadata={"format": "pt"}),
             **tokenizer_files(tokenizer, config.max_position_embeddings),
             "README.md": card.encode()}
    return write_files_atomically(directory, files)


def _check_export(model: nn.Module, tokenizer, labels, name: str) -> None:
    from .finetuning import _check_label_names, _check_texts

    if MODELS[name][1] != "BertConfig":
        raise TypeError(f"export writes BERT's classes ({', '.join(PIPELINE_TAGS)}), got a {name}")
    if not isinstance(tokenizer, BertTokenizer):
        raise TypeError(f"export needs the model's bertmini BertTokenizer, got {type(tokenizer).__name__}")
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"the model's vocabulary has {model.config.vocab_size:,} rows but the tokenizer has "
                         f"{len(tokenizer):,} pieces: a transformers user would get ids the model cannot read. "
                         "Export the tokenizer the model was trained with")
    if labels is None:
        return
    if name not in LABELLED:
        raise ValueError(f"labels name the classes of a classifier; a {name} has none: leave labels=None")
    _check_texts(labels, "export labels=", "label names")
    _check_label_names(labels, model, "export")
    if len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"export labels={list(labels)!r}: give each class a different, non-empty string name "
                         "(label2id maps each name back to its class)")


def tokenizer_files(tokenizer, model_max_length: int) -> dict[str, bytes]:
    """The tokenizer as ``transformers`` reads it: ``tokenizer.json`` (the fast tokenizer,
    :func:`bertmini.tokenization.to_fast`), ``vocab.txt`` (the same pieces, one a line, for the
    slow tokenizer and for :func:`load`) and ``tokenizer_config.json`` (the class, lowercasing,
    the special tokens and the longest input, ``model_max_length``)."""
    from .tokenization import CLS, MASK, PAD, SEP, UNK, to_fast

    settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": model_max_length,
                "cls_token": CLS, "sep_token": SEP, "pad_token": PAD, "unk_token": UNK, "mask_token": MASK}
    return {"tokenizer.json": to_fast(tokenizer).to_str(pretty=True).encode(),
            "vocab.txt": ("\n".join(tokenizer.ids_to_tokens) + "\n").encode(),
            "tokenizer_config.json": json.dumps(settings, indent=2).encode()}


def model_card(name: str, config, model_parameters: int, data: str | None = None,
               results: Sequence[str] = ()) -> str:
    """The ``README.md`` of an exported directory: what the model is, the card of the data set
    ``data`` (from ``bertmini.data.CARDS``) and every number of the results files ``results``
    (``runtime.load_results``; a chapter not run yet says so)."""
    from . import data as datasets
    from . import runtime

    if data is not None and data not in datasets.CARDS:
        raise ValueError(f"data={data!r} is not a data card; use one of {sorted(datasets.CARDS)} or None")
    if isinstance(results, str):
        results = [results]
    labels = getattr(config, "id2label", None) if name in LABELLED else None
    lines = ["---", "library_name: transformers", f"pipeline_tag: {PIPELINE_TAGS[name]}", "tags: [bertmini]",
             "---", "", f"# A {name} exported by bertmini", "",
             f"A BERT of {config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
             f"{config.num_attention_heads} heads, a vocabulary of {config.vocab_size:,} WordPieces and "
             f"{model_parameters:,} parameters, written by `bertmini.hf.export`.", ""]
    if labels:
        lines += ["Labels: " + ", ".join(f"{i} = {labels[i]}" for i in sorted(labels)) + ".", ""]
    lines += ["```python", "from transformers import pipeline",
              f'model = pipeline("{PIPELINE_TAGS[name]}", model="path/to/this/folder")', "```", ""]
    if data is not None:
        lines += ["## Data", ""] + [f"- **{key}**: {value}" for key, value in datasets.CARDS[data].items()] + [""]
    for chapter in results:
        numbers = {k: v for k, v in runtime.load_results(chapter).items() if isinstance(v, (int, float, list))}
        lines += [f"## Results: `{chapter}`", ""]
        if not numbers:
            lines += [f"No numbers yet: run the chapter that saves `{chapter}`.", ""]
            continue
        lines += ["| name | value |", "|---|---|"] + [f"| {k} | {_number(v)} |" for k, v in numbers.items()] + [""]
    return "\n".join(lines)


def _number(value) -> str:
    if isinstance(value, list):
        return ", ".join(_number(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def load(directory: str | os.PathLike) -> tuple[nn.Module, BertTokenizer, list[str] | None]:
    """A ``transformers`` BERT directory (one :func:`export` wrote, or ``save_pretrained``) back
    into bertmini: ``(model, tokenizer, labels)``, the model in eval mode, ``labels`` the class
    names of a classifier (``id2label``), else None. The class is the config's ``architectures``
    (``BertModel`` if none is named); the weights load strictly (every key, every shape); the
    tokenizer comes from ``vocab.txt``, else from ``tokenizer.json``. Every file of a folder
    bertmini wrote is checked against its sha256 (so a directory exported and then overwritten by
    ``save_pretrained`` is refused, naming the file: delete its ``checkpoint.json``).
    """
    from .checkpoint import (MANIFEST_FILE, CorruptCheckpointError, parse_json, parse_safetensors,
                             read_config_and_vocab, read_files)

    directory = Path(directory)
    try:
        files = read_files(directory, ["config.json", "model.safetensors"],
                           optional=["vocab.txt", "tokenizer.json", "tokenizer_config.json"],
                           hint="; load reads a transformers directory (config.json, model.safetensors and the "
                                "tokenizer's files), such as bertmini.hf.export writes")
    except CorruptCheckpointError as e:
        raise CorruptCheckpointError(f"{e}. (If transformers saved into this directory after bertmini.hf.export "
                                     f"wrote it, the checksums in {MANIFEST_FILE} are stale: delete that file "
                                     "to load the new files unchecked.)") from e
    config = parse_json(files["config.json"], directory / "config.json")
    name = _bert_class(config, directory)
    files["vocab.txt"] = _vocab_bytes(files, directory)
    bert_config, tokenizer = read_config_and_vocab(files, directory)
    state, _ = parse_safetensors(files["model.safetensors"], directory / "model.safetensors")
    module = importlib.import_module(MODELS[name][0])
    labels = None
    if name == "BertModel":
        model = module.BertModel(bert_config, add_pooling_layer=any(k.startswith("pooler.") for k in state))
    elif name in LABELLED:
        id2label = config.get("id2label") or {str(i): f"LABEL_{i}" for i in range(config.get("num_labels", 2))}
        labels = [id2label[str(i)] for i in range(len(id2label))]
        model = getattr(module, name)(bert_config, num_labels=len(labels))
    else:
        model = getattr(module, name)(bert_config)
    load_state_dict_strict(model, state, source=name, where=str(directory / "model.safetensors"))
    return model.eval(), tokenizer, labels


def _bert_class(config: dict, directory: Path) -> str:
    """The bertmini class for a ``config.json``, or an error saying why the directory is not a BERT."""
    bert_classes = [n for n, (_, config_class) in MODELS.items() if config_class == "BertConfig"]
    model_type = config.get("model_type")
    name = (config.get("architectures") or ["BertModel"])[0]
    if model_type != "bert" or name not in bert_classes:
        raise ValueError(f"{directory} holds a {name} (model_type={model_type!r}), not a BERT that bertmini "
                         f"builds: load reads model_type 'bert' with one of {', '.join(bert_classes)}")
    return name


def _vocab_bytes(files: dict[str, bytes], directory: Path) -> bytes:
    """``vocab.txt``, or the same pieces from ``tokenizer.json``'s WordPiece model; checks the
    tokenizer lowercases as bertmini's does."""
    from .checkpoint import parse_json

    if "tokenizer_config.json" in files:
        settings = parse_json(files["tokenizer_config.json"], directory / "tokenizer_config.json")
        if settings.get("do_lower_case") is False:
            raise ValueError(f"{directory}'s tokenizer is cased (do_lower_case false); bertmini's tokenizer is "
                             "BERT's uncased one, so its ids would differ")
    if "vocab.txt" in files:
        return files["vocab.txt"]
    if "tokenizer.json" in files:
        model = parse_json(files["tokenizer.json"], directory / "tokenizer.json").get("model") or {}
        if model.get("type") != "WordPiece":
            raise ValueError(f"{directory / 'tokenizer.json'} is a {model.get('type')} tokenizer, not BERT's WordPiece")
        pieces = sorted(model["vocab"], key=model["vocab"].get)
        return ("\n".join(pieces) + "\n").encode()
    raise FileNotFoundError(f"{directory} has no vocab.txt or tokenizer.json: bertmini needs the WordPiece "
                            "vocabulary the model was trained with (export writes both)")
