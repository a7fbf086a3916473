"""DistilBERT (Sanh et al., 2019): BERT with half the layers, trained to imitate a BERT.

The model is BERT's encoder with three things *taken out*:

* **the token-type (segment) embeddings**: DistilBERT reads one sequence of word + position
  embeddings; a pair is still packed as ``[CLS] a [SEP] b [SEP]``, but nothing marks which
  segment a token is in (NSP went with it, as in RoBERTa);
* **the pooler**: no ``tanh(W h_[CLS])`` layer; a classifier reads ``h_[CLS]`` itself
  (``transformers``' ``DistilBertForSequenceClassification`` adds its own ``pre_classifier``);
* **half the layers**: DistilBERT-base has 6 of BERT-base's 12, initialised from every other
  one of the teacher's (the paper, section 3), which :mod:`bertmini.distillation` does for our student.

Each layer is BERT's post-LN block under other names (``attention.q_lin``, ``k_lin``, ``v_lin``,
``out_lin``, ``sa_layer_norm``, ``ffn.lin1``, ``ffn.lin2``, ``output_layer_norm``), with one small
difference: no dropout between the attention's output projection and its residual (BERT has one).
The LayerNorms' epsilon is fixed at 1e-12, as the library fixes it. The masked-LM head is BERT's
(``vocab_transform -> activation -> vocab_layer_norm -> vocab_projector``, the projector tied to the
word embeddings) and goes through :func:`bertmini.heads.masked_lm`; the attention is the formula of
:func:`bertmini.attention.scaled_dot_product_attention`.

The config keeps bertmini's field names (``hidden_size``, ``num_hidden_layers``, ...);
:meth:`DistilBertConfig.from_dict` and :meth:`~DistilBertConfig.to_hf` translate to the library's
(``dim``, ``n_layers``, ``n_heads``, ``hidden_dim``, ``dropout``, ``attention_dropout``,
``activation``). Parameter names are those of ``transformers``' ``modeling_distilbert.py``, so
``bertmini.hf.from_hf`` / ``to_hf`` load strictly.

Not handled: sinusoidal position embeddings (``sinusoidal_pos_embds=True``), explicit
``position_ids``, ``inputs_embeds``, the library's task heads (``DistilBertForSequenceClassification``
and the others), head masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attention import as_additive, scaled_dot_product_attention
from ..fast.dropout import Dropout
from ..heads import BertForPreTrainingOutput, masked_lm
from ..model import ACT_FN, BertEmbeddings, BertEncoder, BertModel, BertModelOutput, BertPreTrainedModel
from ..runtime import can_check_values
from .common import VariantConfig

# bertmini's field name -> the library's DistilBertConfig name
HF_NAMES = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
            "intermediate_size": "hidden_dim", "hidden_dropout_prob": "dropout",
            "attention_probs_dropout_prob": "attention_dropout", "hidden_act": "activation"}
LAYER_NORM_EPS = 1e-12  # fixed in transformers' DistilBERT


@dataclass
class DistilBertConfig(VariantConfig):
    """BERT's fields with DistilBERT-base's defaults (6 layers of BERT-base's width). There are
    no token types: ``type_vocab_size`` stays 1 and no table is built from it."""

    model_type = "distilbert"
    hf_config_class = "DistilBertConfig"

    num_hidden_layers: int = 6
    type_vocab_size: int = 1

    def validate(self) -> None:
        super().validate()
        if self.layer_norm_eps != LAYER_NORM_EPS:
            raise ValueError(f"DistilBertConfig.layer_norm_eps={self.layer_norm_eps!r}: DistilBERT's LayerNorms use "
                             f"{LAYER_NORM_EPS} (transformers fixes it), so leave it at the default")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DistilBertConfig":
        """Read the library's names (``dim``, ``n_layers``, ...) as well as bertmini's."""
        if d.get("sinusoidal_pos_embds"):
            raise ValueError("sinusoidal_pos_embds=True is not handled: bertmini's DistilBERT learns its "
                             "position embeddings, as the released checkpoints do")
        ours = {v: k for k, v in HF_NAMES.items()}
        return super().from_dict({ours.get(k, k): v for k, v in d.items()})

    def hf_fields(self) -> dict[str, Any]:
        """The library's names; it has no ``type_vocab_size`` and no ``layer_norm_eps``."""
        return {HF_NAMES.get(k, k): v for k, v in self.to_dict().items()
                if k not in ("type_vocab_size", "layer_norm_eps")}


class Embeddings(BertEmbeddings):
    """BERT's embeddings without the token-type table: LayerNorm(word + position), dropout."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        del self.token_type_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :input_ids.size(1)])
        return self.dropout(self.LayerNorm(x))


class DistilBertSelfAttention(nn.Module):
    """BERT's multi-head attention with the output projection inside (``out_lin``), under
    DistilBERT's names; no dropout after ``out_lin`` (BERT has one)."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (
            nn.Linear(config.hidden_size, config.hidden_size) for _ in range(4))
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden_states, mask=None, output_attentions=False):
        batch, seq, hidden = hidden_states.shape
        q, k, v = (lin(hidden_states).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
                   for lin in (self.q_lin, self.k_lin, self.v_lin))
        mask = None if mask is None else as_additive(mask, q.dtype)
        context, probs = scaled_dot_product_attention(q, k, v, mask, self.dropout_p if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, seq, hidden)
        return self.out_lin(context), (probs if output_attentions else None)


class FFN(nn.Module):
    """BERT's feed-forward: ``dropout(lin2(act(lin1(x))))``."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.lin1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.lin2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = ACT_FN[config.hidden_act]
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.activation(self.lin1(x))))


class TransformerBlock(nn.Module):
    """BERT's post-LN block: ``x = LN(x + attention(x))``, then ``x = LN(x + FFN(x))``."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, hidden_states, mask=None, output_attentions=False):
        attended, probs = self.attention(hidden_states, mask, output_attentions)
        attended = self.sa_layer_norm(attended + hidden_states)
        return self.output_layer_norm(self.ffn(attended) + attended), probs


class Transformer(BertEncoder):
    """BERT's encoder (its forward pass, unchanged) over DistilBERT's blocks."""

    def __init__(self, config: DistilBertConfig):
        nn.Module.__init__(self)  # BertEncoder's one module, built here with DistilBERT's blocks
        self.layer = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_hidden_layers))


class DistilBertModel(BertPreTrainedModel):
    """The DistilBERT encoder: :class:`Embeddings` and a :class:`Transformer`; no pooler.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, ...)`` returns a
    :class:`bertmini.model.BertModelOutput` with ``pooler_output=None``. ``token_type_ids`` is
    accepted so that the book's batches fit, and must be all 0: there is no segment table.
    """

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.transformer = Transformer(config)
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions=False,
                output_hidden_states=False) -> BertModelOutput:
        if token_type_ids is not None and can_check_values(token_type_ids) and bool(token_type_ids.ne(0).any()):
            raise ValueError("DistilBERT has no token-type embeddings, so token_type_ids must be all 0 (or left "
                             "out); a pair is told apart by its [SEP] alone")
        BertModel.check_inputs(self, input_ids, None, attention_mask)  # BERT's checks: shapes, dtypes, ids
        mask = None
        if attention_mask is not None and not (can_check_values(attention_mask) and bool(attention_mask.all())):
            mask = attention_mask.to(torch.bool)[:, None, None, :]
        hidden = self.embeddings(input_ids.long())
        hidden, attentions, states = self.transformer(hidden, mask, output_attentions, output_hidden_states)
        return BertModelOutput(hidden, None, attentions, states)


class DistilBertForMaskedLM(BertPreTrainedModel):
    """DistilBERT as pretrained: the encoder and BERT's masked-LM head under DistilBERT's names.

    ``forward(input_ids, attention_mask=None, labels=None, token_type_ids=None)`` returns a
    :class:`bertmini.heads.BertForPreTrainingOutput` (``logits`` at every position without
    ``labels``; with them, at the masked positions only, and ``loss``), as
    :class:`bertmini.heads.BertForMaskedLM` does.
    """

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.activation = ACT_FN[config.hidden_act]
        self.distilbert = DistilBertModel(config)
        self.vocab_transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.vocab_layer_norm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.vocab_projector = nn.Linear(config.hidden_size, config.vocab_size)
        self.init_weights()
        self.vocab_projector.weight = self.distilbert.embeddings.word_embeddings.weight  # tied, as in BERT

    def get_output_embeddings(self) -> nn.Linear:
        return self.vocab_projector

    def transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.vocab_layer_norm(self.activation(self.vocab_transform(hidden_states)))

    def forward(self, input_ids, attention_mask=None, labels=None, token_type_ids=None) -> BertForPreTrainingOutput:
        encoded = self.distilbert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        out = BertForPreTrainingOutput()
        masked_lm(self.transform, self.vocab_projector.weight, self.vocab_projector.bias,
                  encoded.last_hidden_state, input_ids, labels, self.config.vocab_size, self.training, out)
        out.loss = out.mlm_loss
        return out
