"""ALBERT (Lan et al., 2019): BERT with far fewer parameters, and sentence-order prediction.

Three changes to BERT, each a few lines here:

1. **Factorised embeddings.** The token, position and segment tables are ``E`` wide
   (``embedding_size``, 128 in ALBERT) instead of ``hidden_size``; one linear layer,
   ``encoder.embedding_hidden_mapping_in``, projects them up to ``hidden_size``. The
   vocabulary costs ``V x E + E x H`` parameters instead of ``V x H``. The MLM head goes
   back down the same way (hidden -> ``E`` -> vocabulary, tied to the ``E``-wide table).
2. **Cross-layer sharing.** ``num_hidden_layers`` steps run through ``num_hidden_groups``
   groups of weights (ALBERT: one group, so all 12 steps reuse one layer's weights); each
   group holds ``inner_group_num`` layers. The layer itself is BERT's post-LN block, under
   ALBERT's names (``attention.dense``, ``attention.LayerNorm``, ``ffn``, ``ffn_output``,
   ``full_layer_layer_norm``). bertmini adds one setting the library has not:
   ``share_attention_only=True`` shares the attention as the groups say and gives every
   step its own feed-forward (the paper's "shared-attention" ablation, Table 4).
3. **Sentence-order prediction** (SOP) replaces next-sentence prediction: the same
   ``Linear(hidden, 2)`` on the pooled ``[CLS]``, but the negative pairs are two consecutive
   segments *swapped*, not a random second segment (label 0 = in order, 1 = swapped).

ALBERT also uses ``gelu_new`` (GELU's tanh approximation) and no dropout by default.
Parameter names are those of ``transformers``' ``modeling_albert.py``
(``albert.embeddings...``, ``albert.encoder.albert_layer_groups.N.albert_layers.M...``,
``albert.pooler``, ``predictions...``, ``sop_classifier.classifier``) so
``bertmini.hf.from_hf`` / ``to_hf`` load strictly. One difference from ``transformers``:
the feed-forward output goes through dropout before its residual, as in BERT and in ALBERT's
own code (``transformers`` leaves it out; it matters only in training with
``hidden_dropout_prob > 0``, and ALBERT's default is 0).

Not handled: explicit ``position_ids``, ``inputs_embeds``, the task heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import BertSelfAttention
from ..fast.dropout import Dropout
from ..heads import BertForPreTrainingOutput, masked_lm
from ..model import ACT_FN, BertEmbeddings, BertModel, BertPreTrainedModel, class_labels
from ..runtime import can_check_values
from .common import VariantConfig, at_width, check_embedding_size

SHARING = ("all", "attention", "none")


@dataclass
class AlbertConfig(VariantConfig):
    """BERT's fields plus ALBERT's: ``embedding_size`` (E), ``num_hidden_groups``,
    ``inner_group_num``, ``classifier_dropout_prob`` (before the SOP head), and bertmini's
    ``share_attention_only``. Defaults are ALBERT-base's (E=128, everything shared)."""

    model_type = "albert"
    hf_config_class = "AlbertConfig"

    vocab_size: int = 30000
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    embedding_size: int = 128
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    classifier_dropout_prob: float = 0.1
    share_attention_only: bool = False

    def validate(self) -> None:
        super().validate()
        check_embedding_size(self)
        for name in ("num_hidden_groups", "inner_group_num"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"AlbertConfig.{name} must be a positive int, got {v!r}")
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ValueError(
                f"num_hidden_groups={self.num_hidden_groups} is more than num_hidden_layers={self.num_hidden_layers}: "
                f"each group of weights serves at least one layer. Use 1 (all layers share) up to "
                f"{self.num_hidden_layers} (none share)."
            )
        if self.share_attention_only and self.inner_group_num != 1:
            raise ValueError(f"share_attention_only=True needs inner_group_num=1, got {self.inner_group_num}")
        if not 0.0 <= self.classifier_dropout_prob < 1.0:
            raise ValueError("AlbertConfig.classifier_dropout_prob must be in [0, 1), "
                             f"got {self.classifier_dropout_prob!r}")

    @classmethod
    def with_sharing(cls, sharing: str, **fields) -> "AlbertConfig":
        """The three settings of the paper's Table 4: ``"all"`` (one set of layer weights for
        every layer), ``"attention"`` (one attention, a feed-forward per layer), ``"none"``
        (BERT's layers, with the factorised embedding)."""
        if sharing not in SHARING:
            raise ValueError(f"sharing={sharing!r}; choose one of {SHARING}")
        layers = fields.get("num_hidden_layers", cls.num_hidden_layers)
        groups = layers if sharing == "none" else 1
        return cls(**fields, num_hidden_groups=groups, share_attention_only=sharing == "attention")

    def hf_fields(self) -> dict:
        fields = self.to_dict()
        # transformers has no attention-only sharing: its twin has a layer per step (copies).
        if fields.pop("share_attention_only"):
            fields["num_hidden_groups"] = self.num_hidden_layers
        return fields


class AlbertAttention(BertSelfAttention):
    """BERT's attention sublayer in one module: the heads (``query``, ``key``, ``value``, from
    :class:`bertmini.attention.BertSelfAttention`), then ``dense``, dropout, the residual and
    ``LayerNorm``, which BERT keeps in ``attention.output``."""

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.output_dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, mask=None, output_attentions=False):
        context, probs = super().forward(hidden_states, mask, output_attentions)
        return self.LayerNorm(hidden_states + self.output_dropout(self.dense(context))), probs


class AlbertLayer(nn.Module):
    """BERT's block (attention, then ``LayerNorm(x + W2 act(W1 x))``) under ALBERT's names."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.full_layer_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = ACT_FN[config.hidden_act]
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, mask=None, output_attentions=False):
        attention_output, probs = self.attention(hidden_states, mask, output_attentions)
        ffn_output = self.dropout(self.ffn_output(self.activation(self.ffn(attention_output))))
        return self.full_layer_layer_norm(ffn_output + attention_output), probs


class AlbertLayerGroup(nn.Module):
    """One group of weights: ``inner_group_num`` layers applied one after the other."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.albert_layers = nn.ModuleList(AlbertLayer(config) for _ in range(config.inner_group_num))

    def forward(self, hidden_states, mask=None, output_attentions=False):
        attentions = []
        for layer in self.albert_layers:
            hidden_states, probs = layer(hidden_states, mask, output_attentions)
            attentions.append(probs)
        return hidden_states, attentions


def group_of_layer(i: int, config: AlbertConfig) -> int:
    """Which group of weights step ``i`` uses: the steps are cut into ``num_hidden_groups``
    equal runs (written as ``transformers`` writes it, so that the rounding is the same)."""
    return int(i / (config.num_hidden_layers / config.num_hidden_groups))


class AlbertTransformer(nn.Module):
    """The projection ``E -> hidden``, then ``num_hidden_layers`` steps through the groups.

    With ``share_attention_only``, there is a group per step (each with its own feed-forward)
    and every step's ``attention`` *is* the module of the first step of its group: one set of
    tensors under several names, as tied embeddings are.
    """

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        groups = config.num_hidden_layers if config.share_attention_only else config.num_hidden_groups
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(config) for _ in range(groups))
        if config.share_attention_only:
            for i, group in enumerate(self.albert_layer_groups):
                owner = self.albert_layer_groups[self._first_step_of_group(i)]
                group.albert_layers[0].attention = owner.albert_layers[0].attention

    def _first_step_of_group(self, i: int) -> int:
        g = group_of_layer(i, self.config)
        return next(j for j in range(self.config.num_hidden_layers) if group_of_layer(j, self.config) == g)

    def group_for_step(self, i: int) -> AlbertLayerGroup:
        if self.config.share_attention_only:
            return self.albert_layer_groups[i]
        return self.albert_layer_groups[group_of_layer(i, self.config)]

    def forward(self, hidden_states, mask=None, output_attentions=False, output_hidden_states=False):
        hidden_states = self.embedding_hidden_mapping_in(hidden_states)
        attentions, states = [], [hidden_states]
        for i in range(self.config.num_hidden_layers):
            hidden_states, probs = self.group_for_step(i)(hidden_states, mask, output_attentions)
            attentions.extend(probs)
            states.append(hidden_states)
        return (
            hidden_states,
            tuple(attentions) if output_attentions else None,
            tuple(states) if output_hidden_states else None,
        )


class AlbertPooler(nn.Linear):
    """BERT's pooler, ``tanh(W h_[CLS] + b)``; the ``Linear`` is the module itself, as
    ``transformers`` names it (``albert.pooler.weight``, not ``pooler.dense.weight``)."""

    def __init__(self, config: AlbertConfig):
        super().__init__(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(hidden_states[:, 0]))


class AlbertModel(BertModel):
    """The ALBERT encoder. Its embeddings are BERT's at width ``E``; its forward pass is
    :class:`bertmini.model.BertModel`'s (the projection to ``hidden_size`` is the encoder's
    first step)."""

    def __init__(self, config: AlbertConfig, add_pooling_layer: bool = True):
        BertPreTrainedModel.__init__(self, config)  # BertModel's three parts, ALBERT's versions
        self.embeddings = BertEmbeddings(at_width(config, config.embedding_size))
        self.encoder = AlbertTransformer(config)
        self.pooler = AlbertPooler(config) if add_pooling_layer else None
        self.init_weights()


class AlbertMLMHead(nn.Module):
    """BERT's MLM head ending at width ``E``: ``dense`` (hidden -> E), activation, ``LayerNorm``,
    then ``decoder`` (E -> vocabulary, tied to the E-wide word embeddings); ``decoder.bias``
    *is* ``bias``."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size)
        self.bias = self.decoder.bias
        self.activation = ACT_FN[config.hidden_act]

    def transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(hidden_states)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class AlbertSOPHead(nn.Module):
    """Sentence-order prediction: dropout, then ``Linear(hidden, 2)`` on the pooled ``[CLS]``."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dropout = Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled_output: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled_output))


@dataclass
class AlbertForPreTrainingOutput(BertForPreTrainingOutput):
    """:class:`bertmini.heads.BertForPreTrainingOutput` with SOP where BERT has NSP:
    ``sop_logits`` ``(batch, 2)``, ``sop_loss``, ``sop_accuracy`` (the ``nsp_*`` fields stay None).
    ``prediction_logits`` is ``mlm_logits``, under ``transformers``' name."""

    sop_loss: torch.Tensor | None = None
    sop_logits: torch.Tensor | None = None
    sop_accuracy: torch.Tensor | None = None

    @property
    def prediction_logits(self) -> torch.Tensor | None:
        return self.mlm_logits


class _AlbertMaskedLMBase(BertPreTrainedModel):
    def _tie_weights(self) -> None:
        self.predictions.decoder.weight = self.albert.embeddings.word_embeddings.weight

    def get_output_embeddings(self) -> nn.Linear:
        return self.predictions.decoder

    def _mlm(self, sequence_output, input_ids, labels, out) -> None:
        masked_lm(self.predictions.transform, self.predictions.decoder.weight, self.predictions.decoder.bias,
                  sequence_output, input_ids, labels,
                  self.config.vocab_size, self.training, out)


class AlbertForPreTraining(_AlbertMaskedLMBase):
    """ALBERT as pretrained: the encoder, the MLM head and the SOP head; the losses summed.

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None,
    sentence_order_label=None)``: ``labels`` as for BERT's MLM; ``sentence_order_label`` is
    0 (segments in order) or 1 (swapped). ``loss`` sums the losses whose labels are given.
    """

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config, add_pooling_layer=True)
        self.predictions = AlbertMLMHead(config)
        self.sop_classifier = AlbertSOPHead(config)
        self.init_weights()
        self._tie_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                sentence_order_label=None) -> AlbertForPreTrainingOutput:
        encoded = self.albert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        out = AlbertForPreTrainingOutput()
        self._mlm(encoded.last_hidden_state, input_ids, labels, out)
        out.sop_logits = self.sop_classifier(encoded.pooler_output)
        if sentence_order_label is not None:
            order = class_labels(sentence_order_label, "sentence_order_label", input_ids.device).view(-1)
            if order.numel() != input_ids.shape[0] or (can_check_values(order) and not bool(
                    ((order == 0) | (order == 1)).all())):
                raise ValueError(
                    "sentence_order_label needs one label per row, 0 (the two segments in their order) or 1 "
                    f"(swapped); got {order.tolist()[:8]} for a batch of {input_ids.shape[0]}"
                )
            out.sop_loss = F.cross_entropy(out.sop_logits.float(), order)
            with torch.no_grad():
                out.sop_accuracy = (out.sop_logits.argmax(-1) == order).float().mean()
        losses = [x for x in (out.mlm_loss, out.sop_loss) if x is not None]
        out.loss = sum(losses) if losses else None
        return out


class AlbertForMaskedLM(_AlbertMaskedLMBase):
    """MLM only: the encoder without a pooler, and the MLM head. Returns a
    :class:`bertmini.heads.BertForPreTrainingOutput` (``logits``, ``loss``)."""

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config, add_pooling_layer=False)
        self.predictions = AlbertMLMHead(config)
        self.init_weights()
        self._tie_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> BertForPreTrainingOutput:
        encoded = self.albert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        out = BertForPreTrainingOutput()
        self._mlm(encoded.last_hidden_state, input_ids, labels, out)
        out.loss = out.mlm_loss
        return out
