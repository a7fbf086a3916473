"""Task heads (chapter 5): one pretrained encoder, three small heads.

* :class:`BertForSequenceClassification`: a linear layer on the pooled ``[CLS]``
  vector, one label per sentence or sentence pair;
* :class:`BertForTokenClassification`: a linear layer on every token (NER);
* :class:`BertForQuestionAnswering`: a start and an end score per token (extractive QA).

Named as in ``transformers`` (``bert``, ``classifier``, ``qa_outputs``) so a state dict
moves between the two unchanged. Each takes the batch as keywords, ``model(**batch)``,
and returns ``.loss`` (None without labels) and ``.logits``.

Not handled: multi-label and regression problem types, a CRF on top of the token
head, the "no answer" option of SQuAD 2.0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import IGNORE_INDEX, BertConfig
from .model import BertModel, BertPreTrainedModel, class_labels
from .runtime import can_check_values

__all__ = ["TaskOutput", "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering"]


@dataclass
class TaskOutput:
    """What every task head returns. ``logits`` is ``(batch, num_labels)`` for sequences,
    ``(batch, seq, num_labels)`` for tokens, ``(batch, seq, 2)`` (start, end) for spans."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None


def _check_labels(labels: torch.Tensor, num_labels: int, what: str, allow_ignore: bool) -> None:
    if not can_check_values(labels):
        return
    valid = (labels >= 0) & (labels < num_labels)
    if allow_ignore:
        valid |= labels == IGNORE_INDEX
    if not bool(valid.all()):
        bad = sorted({int(v) for v in labels[~valid].unique()})
        raise ValueError(
            f"{what}: labels {bad} are outside the label set 0..{num_labels - 1}"
            + (f" (or {IGNORE_INDEX} to ignore a position)" if allow_ignore else "")
            + "; map label names to indices with the task's label list, or build the model with more num_labels"
        )


class _TaskModel(BertPreTrainedModel):
    """Shared plumbing: an encoder called ``bert`` and a head initialised like BERT's."""

    add_pooling_layer = True

    def __init__(self, config: BertConfig, encoder: BertModel | None = None):
        super().__init__(config)
        self.bert = encoder if encoder is not None else BertModel(config, add_pooling_layer=self.add_pooling_layer)

    @classmethod
    def from_encoder(cls, encoder: BertModel, *args, **kwargs):
        """A task model around an existing (pretrained) encoder; only the head is new."""
        if not isinstance(encoder, BertModel):
            raise TypeError(f"from_encoder needs a bertmini BertModel, got {type(encoder).__name__}; "
                            "for a pretraining model pass its .bert")
        return cls(encoder.config, *args, encoder=encoder, **kwargs)

    def _init_head(self, *modules: nn.Module) -> None:
        for m in modules:
            m.apply(self._init_weights)

    def _encode(self, input_ids, token_type_ids, attention_mask):
        return self.bert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)


class BertForSequenceClassification(_TaskModel):
    """A linear classifier on the pooled ``[CLS]`` vector: one label per
    sentence or sentence pair."""

    def __init__(self, config: BertConfig, num_labels: int = 2,
                 encoder: BertModel | None = None):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        super().__init__(config, encoder)
        if self.bert.pooler is None:
            raise ValueError("sequence classification reads the pooled "
                             "[CLS] vector; build the encoder with "
                             "add_pooling_layer=True")
        self.num_labels = num_labels
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self._init_head(self.classifier)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                labels=None) -> TaskOutput:
        encoded = self._encode(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(encoded.pooler_output))
        loss = None
        if labels is not None:
            labels = class_labels(labels, "labels", logits.device)
            _check_labels(labels, self.num_labels,
                          "BertForSequenceClassification", allow_ignore=False)
            loss = F.cross_entropy(logits, labels)
        return TaskOutput(loss, logits)


class BertForTokenClassification(_TaskModel):
    """A linear classifier on every token's final hidden state (NER). Positions labelled
    ``-100`` (special tokens, padding, non-first sub-tokens) are left out of the loss."""

    add_pooling_layer = False

    def __init__(self, config: BertConfig, num_labels: int, encoder: BertModel | None = None):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        super().__init__(config, encoder)
        self.num_labels = num_labels
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self._init_head(self.classifier)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                labels=None) -> TaskOutput:
        encoded = self._encode(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(encoded.last_hidden_state))
        loss = None
        if labels is not None:  # one label per token, IGNORE_INDEX skipped
            labels = class_labels(labels, "labels", logits.device)
            _check_labels(labels, self.num_labels,
                          "BertForTokenClassification", allow_ignore=True)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                   ignore_index=IGNORE_INDEX)
        return TaskOutput(loss, logits)


class BertForQuestionAnswering(_TaskModel):
    """Two scores per token, "the answer starts here" and "ends here" (the paper's S and E
    vectors, as one ``Linear(hidden, 2)``). The loss is the mean of the two cross-entropies
    over positions; choosing a valid span from the scores is ``qa.best_span``."""

    add_pooling_layer = False

    def __init__(self, config: BertConfig, encoder: BertModel | None = None):
        super().__init__(config, encoder)
        self.num_labels = 2
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self._init_head(self.qa_outputs)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                start_positions=None, end_positions=None) -> TaskOutput:
        encoded = self._encode(input_ids, token_type_ids, attention_mask)
        logits = self.qa_outputs(encoded.last_hidden_state)  # (batch, seq, 2)
        start_logits, end_logits = logits.unbind(-1)
        loss = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions, "
                             "or neither")
        if start_positions is not None:  # a cross-entropy over positions
            start_positions, end_positions = self._positions(
                input_ids, start_positions, end_positions, logits.device)
            loss = (F.cross_entropy(start_logits, start_positions)
                    + F.cross_entropy(end_logits, end_positions)) / 2
        return TaskOutput(loss, logits, start_logits, end_logits)

    @staticmethod
    def _positions(input_ids, start_positions, end_positions, device):
        """The answer's token positions as long tensors, checked to lie in the window."""
        seq = input_ids.shape[1]
        start_positions = class_labels(start_positions, "start_positions", device)
        end_positions = class_labels(end_positions, "end_positions", device)
        for name, pos in (("start_positions", start_positions), ("end_positions", end_positions)):
            _check_labels(pos, seq, f"BertForQuestionAnswering {name} (token positions)", allow_ignore=False)
        return start_positions, end_positions
