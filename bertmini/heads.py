"""The pretraining heads (chapter 4): masked-LM and next-sentence prediction on top of the encoder.

Pretraining (the BERT paper, section 3.1)::

    MLM: h_i -> LayerNorm(GELU(W h_i + b)) -> E^T . + bias     (E = the word embeddings, tied)
    NSP: pooled [CLS] -> Linear(hidden, 2)                      (0 = IsNext, 1 = NotNext)
    loss = mean CE over masked positions + CE of the NSP label

Module names are those of ``transformers`` (``bert``, ``cls.predictions.transform``,
``cls.predictions.decoder``, ``cls.predictions.bias``, ``cls.seq_relationship``), so
``bertmini.hf.from_hf`` / ``to_hf`` move weights both ways unchanged.

Speed: the MLM head runs **only at the masked positions** (``labels != -100``).
The vocabulary projection is the most expensive matrix product of a small BERT
(hidden x vocab per token); computing it at the 15% of positions that have a
label, instead of at all of them, does the same learning for about a sixth of
that cost. Without ``labels`` (inference) the head scores every position.

The plain loss is ``F.cross_entropy`` of those logits. To train (train mode, autograd
on), :func:`bertmini.fast.mlm_loss.masked_lm_loss` computes the same loss and gradients
a block of the vocabulary at a time, without storing the logits, so ``mlm_logits`` is
None there; ``bertmini.fast.ENABLED = False`` switches it off (the choice is made in
``_MaskedLMBase._mlm``). The task heads of chapter 5 are in :mod:`bertmini.task_heads`.

Not handled: ``transformers``' ``BertLMHeadModel`` (causal LM), ``inputs_embeds``,
and untied output embeddings (the decoder always shares the word embeddings).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import fast
from .checkpoint import load_state_dict_strict
from .config import IGNORE_INDEX, BertConfig
from .fast.mlm_loss import masked_lm_loss
from .model import ACT_FN, BertModel, BertPreTrainedModel, class_labels
from .runtime import can_check_values


class BertPredictionHeadTransform(nn.Module):
    """``LayerNorm(act(dense(h)))``: one more layer between the encoder and the
    vocabulary."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT_FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size,
                                      eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """Scores every vocabulary entry: transform, then a decoder whose weight
    *is* the word-embedding matrix (tied by :class:`BertForPreTraining`), plus
    a bias per token."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size,
                                 bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = self.transform(hidden_states)
        return F.linear(h, self.decoder.weight, self.bias)


class BertOnlyMLMHead(nn.Module):
    """The head of :class:`BertForMaskedLM`: ``cls.predictions`` only."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertPreTrainingHeads(nn.Module):
    """Both pretraining heads: ``predictions`` (MLM) and ``seq_relationship``
    (NSP)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


@dataclass
class BertForPreTrainingOutput:
    """What :class:`BertForPreTraining` and :class:`BertForMaskedLM` return.

    With ``labels``: ``mlm_logits`` is ``(n_masked, vocab)``, one row per position
    where ``labels != -100`` in row-major order (``masked_labels`` holds their
    labels, ``masked_positions`` their ``(row, col)`` indices); without labels it is
    ``(batch, seq, vocab)``. In train mode under autograd, with labels, ``mlm_logits``
    is None: the loss comes from :func:`bertmini.fast.mlm_loss.masked_lm_loss`, which never stores them
    (call the model in ``eval()`` mode or under ``torch.no_grad()`` to see them).
    ``nsp_logits`` is ``(batch, 2)`` (None for MLM only).
    Losses and accuracies are None when their labels were not given.
    ``logits`` is ``mlm_logits``, the name every head in the book shares.
    """

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    nsp_logits: torch.Tensor | None = None
    mlm_accuracy: torch.Tensor | None = None
    nsp_accuracy: torch.Tensor | None = None
    masked_labels: torch.Tensor | None = None
    masked_positions: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor | None:
        return self.mlm_logits


def _check_mlm_labels(labels: torch.Tensor, input_ids: torch.Tensor, vocab_size: int) -> None:
    if labels.shape != input_ids.shape:
        raise ValueError(
            f"labels has shape {tuple(labels.shape)} but input_ids has {tuple(input_ids.shape)}; MLM labels "
            "hold the original id at each masked position and -100 elsewhere (see bertmini.masking.mask_tokens)"
        )
    if not can_check_values(labels):
        return
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab_size))
    if bool(bad.any()):
        raise ValueError(
            f"labels contain {sorted({int(v) for v in labels[bad].unique()})[:5]}, neither -100 nor an id in "
            f"[0, {vocab_size}); was the text encoded with a different vocabulary?"
        )


def masked_lm(transform, weight: torch.Tensor, bias: torch.Tensor,
              sequence_output: torch.Tensor, input_ids: torch.Tensor,
              labels: torch.Tensor | None, vocab_size: int, training: bool,
              out: BertForPreTrainingOutput) -> None:
    """Fill ``out``'s MLM fields from the encoder's ``sequence_output``:
    ``transform``, then the (tied) decoder ``weight`` and ``bias``. Without
    ``labels``, the logits at every position; with them, logits, loss and
    accuracy at the masked positions only (``labels != -100``), and while
    ``training`` under autograd (with ``bertmini.fast.ENABLED``) the loss from
    :func:`bertmini.fast.mlm_loss.masked_lm_loss`, which stores no logits.
    BERT's heads and the variants' (RoBERTa, ALBERT, ELECTRA's generator) all
    go through here."""
    if labels is None:
        out.mlm_logits = F.linear(transform(sequence_output), weight, bias)
        return
    labels = class_labels(labels, "labels", input_ids.device)
    _check_mlm_labels(labels, input_ids, vocab_size)
    selected = labels != IGNORE_INDEX
    out.masked_positions = selected.nonzero()
    out.masked_labels = labels[selected]
    # The sparse head: gather the masked rows first, then score only them.
    rows = sequence_output[selected]
    if out.masked_labels.numel() == 0:  # nothing masked: no signal, no error
        out.mlm_logits = F.linear(transform(rows), weight, bias)
        out.mlm_loss = out.mlm_logits.sum() * 0.0
        out.mlm_accuracy = torch.zeros((), device=input_ids.device)
        return
    if fast.ENABLED and training and torch.is_grad_enabled():
        # the fast twin: the same loss and gradients, the logits never stored
        out.mlm_loss, out.mlm_accuracy = masked_lm_loss(
            transform(rows), weight, bias, out.masked_labels)
        return
    out.mlm_logits = F.linear(transform(rows), weight, bias)
    out.mlm_loss = F.cross_entropy(out.mlm_logits.float(), out.masked_labels)
    with torch.no_grad():
        hits = out.mlm_logits.argmax(-1) == out.masked_labels
        out.mlm_accuracy = hits.float().mean()


def _nsp_labels(next_sentence_label, input_ids: torch.Tensor) -> torch.Tensor:
    """The NSP labels as a long tensor, one per row, each 0 or 1 (else a clear error)."""
    label = class_labels(next_sentence_label, "next_sentence_label", input_ids.device).view(-1)
    if label.numel() != input_ids.shape[0] or (
            can_check_values(label) and not bool(((label == 0) | (label == 1)).all())):
        raise ValueError(
            "next_sentence_label needs one label per row, 0 (IsNext: B follows A) or 1 (NotNext: "
            f"B is random); got {label.tolist()[:8]} for a batch of {input_ids.shape[0]}"
        )
    return label


class _MaskedLMBase(BertPreTrainedModel):
    """The MLM part shared by :class:`BertForPreTraining` and :class:`BertForMaskedLM`."""

    def _tie_weights(self) -> None:
        # One tensor, two names: the decoder *is* the input embedding matrix (Press & Wolf, 2017).
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def _mlm(self, sequence_output: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None,
             out: BertForPreTrainingOutput) -> None:
        head = self.cls.predictions
        masked_lm(head.transform, head.decoder.weight, head.bias, sequence_output, input_ids, labels,
                  self.config.vocab_size, self.training, out)


class BertForPreTraining(_MaskedLMBase):
    """BERT as pretrained: the encoder, the MLM head and the NSP head; the two losses summed.

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None,
    next_sentence_label=None)``: ``labels`` are MLM labels (original id at masked
    positions, -100 elsewhere), ``next_sentence_label`` is 0 (B follows A) or 1
    (B is random). Give either, both or none; ``loss`` sums the losses given, so
    leaving out ``next_sentence_label`` trains MLM alone (RoBERTa's choice).
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=True)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()
        self._tie_weights()  # after init, so the embeddings' padding row stays zero

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                labels=None, next_sentence_label=None
                ) -> BertForPreTrainingOutput:
        encoded = self.bert(input_ids, token_type_ids=token_type_ids,
                            attention_mask=attention_mask)
        out = BertForPreTrainingOutput()
        self._mlm(encoded.last_hidden_state, input_ids, labels, out)
        out.nsp_logits = self.cls.seq_relationship(encoded.pooler_output)
        if next_sentence_label is not None:
            label = _nsp_labels(next_sentence_label, input_ids)
            out.nsp_loss = F.cross_entropy(out.nsp_logits.float(), label)
            with torch.no_grad():
                hits = out.nsp_logits.argmax(-1) == label
                out.nsp_accuracy = hits.float().mean()
        losses = [x for x in (out.mlm_loss, out.nsp_loss) if x is not None]
        out.loss = sum(losses) if losses else None
        return out


class BertForMaskedLM(_MaskedLMBase):
    """MLM only (RoBERTa's objective; ``transformers.BertForMaskedLM``): no pooler, no NSP head.

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None)``; the
    output is a :class:`BertForPreTrainingOutput` with the NSP fields None.
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.init_weights()
        self._tie_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> BertForPreTrainingOutput:
        encoded = self.bert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        out = BertForPreTrainingOutput()
        self._mlm(encoded.last_hidden_state, input_ids, labels, out)
        out.loss = out.mlm_loss
        return out

    @classmethod
    def from_pretraining(cls, model: BertForPreTraining) -> "BertForMaskedLM":
        """The masked-LM part of a pretraining model, as a new model (what ``pipeline("fill-mask")``
        runs): the encoder and the MLM head copied; the pooler and the NSP head left out."""
        if not isinstance(model, BertForPreTraining):
            raise TypeError(f"from_pretraining takes a BertForPreTraining, got {type(model).__name__}")
        mlm = cls(model.config)
        dropped = ("bert.pooler.", "cls.seq_relationship.")
        load_state_dict_strict(mlm, {k: v for k, v in model.state_dict().items() if not k.startswith(dropped)},
                               source="BertForPreTraining")
        return mlm.train(model.training)
