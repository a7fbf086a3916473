"""Heads on top of the encoder: pretraining (chapter 4) and tasks (chapter 5).

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
In training (train mode, autograd on) it goes one step further: the loss and its
gradients are computed a block of vocabulary entries at a time (:class:`LinearCrossEntropy`), so
the ``n_masked x vocab`` logits are never stored; ``mlm_logits`` is then None.

Not handled: ``transformers``' ``BertLMHeadModel`` (causal LM), ``inputs_embeds``,
and untied output embeddings (the decoder always shares the word embeddings).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .model import ACT_FN, BertModel, BertPreTrainedModel

IGNORE_INDEX = -100  # label of the positions the MLM loss skips (not masked), as in torch's cross_entropy


class BertPredictionHeadTransform(nn.Module):
    """``LayerNorm(act(dense(h)))``: one more layer between the encoder and the vocabulary."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT_FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """Scores every vocabulary entry: transform, then a decoder whose weight *is* the
    word-embedding matrix (tied by :class:`BertForPreTraining`), plus a bias per token."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden_states), self.decoder.weight, self.bias)


class LinearCrossEntropy(torch.autograd.Function):
    """``(mean cross-entropy of softmax(x W^T + b) against labels, top-1 accuracy)`` and,
    already in the forward pass, the loss's gradients, ``block`` vocabulary entries at a time.

    The same numbers as ``F.cross_entropy(F.linear(x, W, b), labels)`` under autograd,
    but the ``rows x vocab`` logits are never stored. Pass 1 goes through the
    vocabulary block by block and keeps, per row, a running maximum and sum of
    exponentials (so the logsumexp comes out exact), the label's logit and the best
    guess. Pass 2 computes each block's logits again: the gradient of the summed loss
    with respect to them is ``softmax - onehot(label)``, and it gives that block's
    share of the gradients of ``x``, ``W`` and ``b`` at once.

    Why bother: at vocab 30,522 the logits of 614 masked rows are 75 MB, and on a CPU
    a product that writes them all runs at about half the machine's matmul rate
    (the 31 MB matrix ``W`` streams from memory) and every fresh 75 MB tensor costs
    page faults. A 1,024-entry block of ``W`` (1 MB) stays in cache, and so does
    everything made from it. On the book's 2-core machine the head's forward +
    backward took 260-310 ms this way, against 378 ms for the plain version,
    even though the forward product is done twice.
    ``x``, ``W`` and ``b`` come in one dtype (the caller casts them under autocast);
    the softmax runs in float32 and the gradients add up in float32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, labels, block: int):
        rows, vocab = x.shape[0], weight.shape[0]
        f32 = dict(dtype=torch.float32, device=x.device)

        def logits(j):  # rows x block, float32
            return torch.addmm(bias[j:j + block], x, weight[j:j + block].t()).float()

        def labelled(j):  # the rows whose label lies in block j, and that label's column there
            r = ((labels >= j) & (labels < j + block)).nonzero()[:, 0]
            return r, labels[r] - j

        starts = range(0, vocab, block)
        label_cells = [labelled(j) for j in starts]
        run_max = torch.full((rows,), float("-inf"), **f32)  # also the best logit so far
        run_sum, label_logit = torch.zeros(rows, **f32), torch.zeros(rows, **f32)
        top_id = torch.zeros(rows, dtype=torch.long, device=x.device)
        for j, (r, c) in zip(starts, label_cells):  # pass 1: logsumexp, label logit, best guess
            z = logits(j)
            z_max, z_arg = z.max(1)
            better = z_max > run_max  # strict: on a tie the earlier block wins, as argmax does
            top_id = torch.where(better, z_arg + j, top_id)
            new_max = torch.maximum(run_max, z_max)
            run_sum = run_sum * (run_max - new_max).exp() + (z - new_max[:, None]).exp().sum(1)
            run_max = new_max
            label_logit[r] = z[r, c]
        logsumexp = run_max + run_sum.log()

        grad_x = torch.zeros(x.shape, **f32)
        grad_w, grad_b = torch.empty(weight.shape, **f32), torch.empty(bias.shape, **f32)
        for j, (r, c) in zip(starts, label_cells):  # pass 2: softmax - onehot, and the gradients
            d_logits = logits(j).sub_(logsumexp[:, None]).exp_()
            d_logits[r, c] -= 1.0
            grad_b[j:j + block] = d_logits.sum(0)
            d_logits = d_logits.to(x.dtype)  # bf16 under autocast, as autograd's backward would be
            grad_x += d_logits @ weight[j:j + block]
            grad_w[j:j + block] = d_logits.t() @ x
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.rows, ctx.dtypes = rows, (x.dtype, weight.dtype, bias.dtype)
        accuracy = (top_id == labels).float().mean()
        ctx.mark_non_differentiable(accuracy)
        return (logsumexp - label_logit).mean(), accuracy

    @staticmethod
    def backward(ctx, grad_loss, _grad_accuracy):
        scale = grad_loss.float() / ctx.rows  # the loss is the mean over rows
        grads = [(g * scale).to(dtype) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return (*grads, None, None)


def masked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   labels: torch.Tensor, block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, accuracy)`` of the MLM decoder through :class:`LinearCrossEntropy`, in the
    autocast dtype when autocast is on (as ``F.linear`` would run)."""
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    with torch.autocast(device, enabled=False):
        return LinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), bias.to(dtype), labels, block)


class BertOnlyMLMHead(nn.Module):
    """The head of :class:`BertForMaskedLM`: ``cls.predictions`` only."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertPreTrainingHeads(nn.Module):
    """Both pretraining heads: ``predictions`` (MLM) and ``seq_relationship`` (NSP)."""

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
    is None: the loss comes from :func:`masked_lm_loss`, which never stores them
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
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab_size))
    if bool(bad.any()):
        raise ValueError(
            f"labels contain {sorted({int(v) for v in labels[bad].unique()})[:5]}, neither -100 nor an id in "
            f"[0, {vocab_size}); was the text encoded with a different vocabulary?"
        )


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
        if labels is None:
            out.mlm_logits = head(sequence_output)
            return
        _check_mlm_labels(labels, input_ids, self.config.vocab_size)
        selected = labels != IGNORE_INDEX
        out.masked_positions = selected.nonzero()
        out.masked_labels = labels[selected]
        # The sparse head: gather the masked rows first, then transform and project only them.
        rows = sequence_output[selected]
        if out.masked_labels.numel() == 0:  # nothing masked in this batch: no signal, but not an error
            out.mlm_logits = head(rows)
            out.mlm_loss = out.mlm_logits.sum() * 0.0
            out.mlm_accuracy = torch.zeros((), device=input_ids.device)
            return
        if self.training and torch.is_grad_enabled():  # training: never store the logits
            out.mlm_loss, out.mlm_accuracy = masked_lm_loss(head.transform(rows), head.decoder.weight,
                                                            head.bias, out.masked_labels)
            return
        out.mlm_logits = head(rows)
        out.mlm_loss = F.cross_entropy(out.mlm_logits.float(), out.masked_labels)
        with torch.no_grad():
            out.mlm_accuracy = (out.mlm_logits.argmax(-1) == out.masked_labels).float().mean()


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

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                next_sentence_label=None) -> BertForPreTrainingOutput:
        encoded = self.bert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        out = BertForPreTrainingOutput()
        self._mlm(encoded.last_hidden_state, input_ids, labels, out)
        out.nsp_logits = self.cls.seq_relationship(encoded.pooler_output)
        if next_sentence_label is not None:
            next_sentence_label = torch.as_tensor(next_sentence_label, device=input_ids.device).long().view(-1)
            if next_sentence_label.numel() != input_ids.shape[0] or not bool(
                    ((next_sentence_label == 0) | (next_sentence_label == 1)).all()):
                raise ValueError(
                    "next_sentence_label needs one label per row, 0 (IsNext: B follows A) or 1 (NotNext: "
                    f"B is random); got {next_sentence_label.tolist()[:8]} for a batch of {input_ids.shape[0]}"
                )
            out.nsp_loss = F.cross_entropy(out.nsp_logits.float(), next_sentence_label)
            with torch.no_grad():
                out.nsp_accuracy = (out.nsp_logits.argmax(-1) == next_sentence_label).float().mean()
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


# --- Task heads (chapter 5) ---
# One pretrained encoder, three small heads, named as in transformers
# (``bert``, ``classifier``, ``qa_outputs``) so a state dict moves between the two
# unchanged. Each takes the batch as keywords, ``model(**batch)``, and returns
# ``.loss`` (None without labels) and ``.logits``.
# Not handled: multi-label and regression problem types, a CRF on top of the token
# head, the "no answer" option of SQuAD 2.0.
from dataclasses import dataclass as _dataclass

import torch as _torch
import torch.nn.functional as _F
from torch import nn as _nn

from .config import BertConfig as _BertConfig
from .model import BertModel as _BertModel, BertPreTrainedModel as _BertPreTrainedModel

TASK_IGNORE_INDEX = -100  # label of positions the loss skips: padding, [CLS]/[SEP], later sub-tokens


@_dataclass
class TaskOutput:
    """What every task head returns. ``logits`` is ``(batch, num_labels)`` for sequences,
    ``(batch, seq, num_labels)`` for tokens, ``(batch, seq, 2)`` (start, end) for spans."""

    loss: _torch.Tensor | None
    logits: _torch.Tensor
    start_logits: _torch.Tensor | None = None
    end_logits: _torch.Tensor | None = None


def _check_labels(labels: _torch.Tensor, num_labels: int, what: str, allow_ignore: bool) -> None:
    valid = (labels >= 0) & (labels < num_labels)
    if allow_ignore:
        valid |= labels == TASK_IGNORE_INDEX
    if not bool(valid.all()):
        bad = sorted({int(v) for v in labels[~valid].unique()})
        raise ValueError(
            f"{what}: labels {bad} are outside the label set 0..{num_labels - 1}"
            + (f" (or {TASK_IGNORE_INDEX} to ignore a position)" if allow_ignore else "")
            + "; map label names to indices with the task's label list, or build the model with more num_labels"
        )


class _TaskModel(_BertPreTrainedModel):
    """Shared plumbing: an encoder called ``bert`` and a head initialised like BERT's."""

    add_pooling_layer = True

    def __init__(self, config: _BertConfig, encoder: _BertModel | None = None):
        super().__init__(config)
        self.bert = encoder if encoder is not None else _BertModel(config, add_pooling_layer=self.add_pooling_layer)

    @classmethod
    def from_encoder(cls, encoder: _BertModel, *args, **kwargs):
        """A task model around an existing (pretrained) encoder; only the head is new."""
        if not isinstance(encoder, _BertModel):
            raise TypeError(f"from_encoder needs a bertmini BertModel, got {type(encoder).__name__}; "
                            "for a pretraining model pass its .bert")
        return cls(encoder.config, *args, encoder=encoder, **kwargs)

    def _init_head(self, *modules: _nn.Module) -> None:
        for m in modules:
            m.apply(self._init_weights)

    def _encode(self, input_ids, token_type_ids, attention_mask):
        return self.bert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)


class BertForSequenceClassification(_TaskModel):
    """A linear classifier on the pooled ``[CLS]`` vector: one label per sentence or pair."""

    def __init__(self, config: _BertConfig, num_labels: int = 2, encoder: _BertModel | None = None):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        super().__init__(config, encoder)
        if self.bert.pooler is None:
            raise ValueError("sequence classification reads the pooled [CLS] vector; "
                             "build the encoder with add_pooling_layer=True")
        self.num_labels = num_labels
        self.dropout = _nn.Dropout(config.hidden_dropout_prob)
        self.classifier = _nn.Linear(config.hidden_size, num_labels)
        self._init_head(self.classifier)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> TaskOutput:
        pooled = self._encode(input_ids, token_type_ids, attention_mask).pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            _check_labels(labels, self.num_labels, "BertForSequenceClassification", allow_ignore=False)
            loss = _F.cross_entropy(logits, labels)
        return TaskOutput(loss, logits)


class BertForTokenClassification(_TaskModel):
    """A linear classifier on every token's final hidden state (NER). Positions labelled
    ``-100`` (special tokens, padding, non-first sub-tokens) are left out of the loss."""

    add_pooling_layer = False

    def __init__(self, config: _BertConfig, num_labels: int, encoder: _BertModel | None = None):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}")
        super().__init__(config, encoder)
        self.num_labels = num_labels
        self.dropout = _nn.Dropout(config.hidden_dropout_prob)
        self.classifier = _nn.Linear(config.hidden_size, num_labels)
        self._init_head(self.classifier)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> TaskOutput:
        hidden = self._encode(input_ids, token_type_ids, attention_mask).last_hidden_state
        logits = self.classifier(self.dropout(hidden))
        loss = None
        if labels is not None:
            _check_labels(labels, self.num_labels, "BertForTokenClassification", allow_ignore=True)
            loss = _F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=TASK_IGNORE_INDEX)
        return TaskOutput(loss, logits)


class BertForQuestionAnswering(_TaskModel):
    """Two scores per token, "the answer starts here" and "ends here" (the paper's S and E
    vectors, as one ``Linear(hidden, 2)``). The loss is the mean of the two cross-entropies
    over positions; choosing a valid span from the scores is ``finetuning.best_span``."""

    add_pooling_layer = False

    def __init__(self, config: _BertConfig, encoder: _BertModel | None = None):
        super().__init__(config, encoder)
        self.num_labels = 2
        self.qa_outputs = _nn.Linear(config.hidden_size, 2)
        self._init_head(self.qa_outputs)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                start_positions=None, end_positions=None) -> TaskOutput:
        hidden = self._encode(input_ids, token_type_ids, attention_mask).last_hidden_state
        logits = self.qa_outputs(hidden)
        start_logits, end_logits = logits.unbind(-1)
        loss = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions, or neither")
        if start_positions is not None:
            seq = input_ids.shape[1]
            for name, pos in (("start_positions", start_positions), ("end_positions", end_positions)):
                _check_labels(pos, seq, f"BertForQuestionAnswering {name} (token positions)", allow_ignore=False)
            loss = (_F.cross_entropy(start_logits, start_positions) + _F.cross_entropy(end_logits, end_positions)) / 2
        return TaskOutput(loss, logits, start_logits, end_logits)
