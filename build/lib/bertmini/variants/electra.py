"""ELECTRA (Clark et al., 2020): BERT's encoder trained to spot replaced tokens, not to fill masks.

The encoder is BERT's; what differs:

* **embeddings of their own width.** The tables are ``embedding_size`` (``E``) wide; when
  ``E != hidden_size``, ``embeddings_project`` (a ``Linear(E, hidden)``) sits between them
  and the first layer. This lets a narrow generator and a wide discriminator share one
  embedding table.
* **no pooler**, and two heads instead of BERT's MLM + NSP:

  - the **discriminator** (:class:`ElectraForPreTraining`) scores *every* token:
    ``dense -> act -> dense_prediction`` gives one logit per token, "this token was
    replaced" (label 1) against "original" (label 0), trained with a binary cross-entropy;
  - the **generator** (:class:`ElectraForMaskedLM`) is a small masked LM whose predictions
    supply the replacements: ``dense (hidden -> E) -> GELU -> LayerNorm -> generator_lm_head``
    (tied to the word embeddings).

The generator is 1/4 to 1/2 as wide as the discriminator (the paper, section 3.2: a
generator as strong as the discriminator makes the task too hard);
:func:`check_generator_fits` says so for a pair that does not fit, and
:func:`generator_config` builds a fitting one.

Parameter names are those of ``transformers``' ``modeling_electra.py`` (``electra.embeddings...``,
``electra.embeddings_project``, ``discriminator_predictions...``, ``generator_predictions...``,
``generator_lm_head``) so ``bertmini.hf.from_hf`` / ``to_hf`` load strictly. Not handled:
explicit ``position_ids``, ``inputs_embeds``, the decoder use, the task heads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import BertForPreTrainingOutput, masked_lm
from ..model import ACT_FN, BertEmbeddings, BertEncoder, BertModel, BertPreTrainedModel, class_labels
from ..runtime import can_check_values
from .common import VariantConfig, at_width, check_embedding_size


@dataclass
class ElectraConfig(VariantConfig):
    """BERT's fields plus ``embedding_size`` (E, the width of the token embeddings)."""

    model_type = "electra"
    hf_config_class = "ElectraConfig"

    embedding_size: int = 128

    def validate(self) -> None:
        super().validate()
        check_embedding_size(self)


def check_generator_fits(generator: ElectraConfig, discriminator: ElectraConfig) -> None:
    """Raise ``ValueError`` unless the two configs make an ELECTRA pair: the generator no wider
    than the discriminator, and one embedding table that both can share (same vocabulary,
    ``embedding_size``, positions and token types)."""
    if generator.hidden_size > discriminator.hidden_size:
        raise ValueError(
            f"the generator (hidden_size={generator.hidden_size}) is wider than the discriminator "
            f"(hidden_size={discriminator.hidden_size}); ELECTRA's generator is 1/4 to 1/2 as wide, since a "
            f"generator as strong as the discriminator makes its task too hard (the paper, section 3.2). Use "
            f"generator_config(discriminator) or a hidden_size of about {max(1, discriminator.hidden_size // 4)}"
        )
    for name in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size", "pad_token_id"):
        g, d = getattr(generator, name), getattr(discriminator, name)
        if g != d:
            raise ValueError(f"the generator's {name}={g} differs from the discriminator's {d}; the two share one "
                             f"embedding table, so set the generator's {name}={d}")


def generator_config(discriminator: ElectraConfig, fraction: float = 0.25) -> ElectraConfig:
    """The discriminator's config at ``fraction`` of its width (hidden size, heads and
    feed-forward scaled; the depth and the embeddings kept)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]; ELECTRA uses 1/4 to 1/2")
    heads = max(1, round(discriminator.num_attention_heads * fraction))
    hidden = max(heads, round(discriminator.hidden_size * fraction / heads) * heads)
    return dataclasses.replace(discriminator, hidden_size=hidden, num_attention_heads=heads,
                               intermediate_size=max(1, round(discriminator.intermediate_size * fraction)))


class ElectraModel(BertModel):
    """The ELECTRA encoder: BERT's embeddings at width ``E``, ``embeddings_project`` (only when
    ``E != hidden_size``), BERT's encoder; no pooler (``pooler_output`` is None)."""

    def __init__(self, config: ElectraConfig):
        BertPreTrainedModel.__init__(self, config)
        self.embeddings = BertEmbeddings(at_width(config, config.embedding_size))
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = BertEncoder(config)
        self.pooler = None
        self.init_weights()

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """BERT's embeddings at width ``E``, then ``embeddings_project`` to ``hidden_size``; the rest of
        the forward pass is :meth:`bertmini.model.BertModel.forward`."""
        hidden = self.embeddings(input_ids, token_type_ids)
        return self.embeddings_project(hidden) if hasattr(self, "embeddings_project") else hidden


class ElectraDiscriminatorPredictions(nn.Module):
    """One logit per token: ``dense_prediction(act(dense(h)))``, "replaced" if positive."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT_FN[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.activation(self.dense(hidden_states))).squeeze(-1)


@dataclass
class ElectraForPreTrainingOutput:
    """What :class:`ElectraForPreTraining` returns. ``logits``: ``(batch, seq)``, one per token
    (positive = replaced). With ``labels``: ``loss`` (the mean binary cross-entropy over the
    real tokens) and ``accuracy`` (of ``logits > 0`` over them)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None


class ElectraForPreTraining(BertPreTrainedModel):
    """The ELECTRA discriminator: the encoder and a per-token "replaced?" head.

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None)``: ``labels``
    are ``(batch, seq)``, 1 where the token was replaced and 0 where it is the original;
    padding (``attention_mask == 0``) is left out of the loss.
    """

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.init_weights()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> ElectraForPreTrainingOutput:
        encoded = self.electra(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        out = ElectraForPreTrainingOutput(logits=self.discriminator_predictions(encoded.last_hidden_state))
        if labels is not None:
            labels = class_labels(labels, "labels", input_ids.device)
            if labels.shape != input_ids.shape or (can_check_values(labels) and not bool(
                    ((labels == 0) | (labels == 1)).all())):
                raise ValueError(
                    f"the discriminator's labels need one 0 (original) or 1 (replaced) per token, shape "
                    f"{tuple(input_ids.shape)}; got shape {tuple(labels.shape)}"
                )
            real = torch.ones_like(labels, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
            logits, targets = out.logits[real].float(), labels[real].float()
            out.loss = F.binary_cross_entropy_with_logits(logits, targets)
            with torch.no_grad():
                out.accuracy = ((logits > 0).float() == targets).float().mean()
        return out


class ElectraGeneratorPredictions(nn.Module):
    """The generator's transform, down to width ``E``: ``LayerNorm(GELU(dense(h)))`` (always
    the exact GELU, as in ``transformers``)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden_states)))


class ElectraForMaskedLM(BertPreTrainedModel):
    """The ELECTRA generator: the encoder and an MLM head. ``forward(input_ids,
    token_type_ids=None, attention_mask=None, labels=None)`` returns a
    :class:`bertmini.heads.BertForPreTrainingOutput` (``logits``; with ``labels``, only at
    the masked positions, and ``loss``), as :class:`bertmini.heads.BertForMaskedLM` does."""

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)
        self.init_weights()
        self.generator_lm_head.weight = self.electra.embeddings.word_embeddings.weight  # tied

    def get_output_embeddings(self) -> nn.Linear:
        return self.generator_lm_head

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                keep_logits: bool = False) -> BertForPreTrainingOutput:
        """``keep_logits=True`` computes the logits at the masked positions even while training
        (:class:`ElectraPretraining` samples its replacements from them)."""
        encoded = self.electra(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        out = BertForPreTrainingOutput()
        masked_lm(self.generator_predictions, self.generator_lm_head.weight, self.generator_lm_head.bias,
                  encoded.last_hidden_state, input_ids, labels,
                  self.config.vocab_size, self.training and not keep_logits, out)
        out.loss = out.mlm_loss
        return out


# ----------------------------------------------------------------------------- pretraining both

# ELECTRA's masking (the paper's code, pretrain_helpers.mask): 15% of the tokens are chosen; of
# those 85% become [MASK] and 15% keep their token; none becomes a random token, because the
# generator's samples are the replacements. Pass these to bertmini.masking.MaskedBatches.
MASKING = {"mlm_probability": 0.15, "mask_replace_prob": 0.85, "random_replace_prob": 0.0}


@dataclass
class ElectraPretrainingOutput:
    """What :class:`ElectraPretraining` returns: ``loss = mlm_loss + disc_weight * disc_loss``,
    the generator's masked-LM loss and accuracy, the discriminator's loss and per-token
    accuracy, and ``replaced_share`` (the share of real tokens the sample changed)."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    mlm_accuracy: torch.Tensor | None = None
    disc_loss: torch.Tensor | None = None
    disc_accuracy: torch.Tensor | None = None
    replaced_share: torch.Tensor | None = None
    corrupted_ids: torch.Tensor | None = None
    replaced: torch.Tensor | None = None


class ElectraPretraining(nn.Module):
    """ELECTRA's pretraining: a small generator and the discriminator, trained together.

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None)`` takes a
    masked batch (``labels`` as for BERT's MLM, from :data:`MASKING`) and

    1. runs the **generator** (an :class:`ElectraForMaskedLM`, ``generator_fraction`` of the
       discriminator's width) on it: its masked-LM loss at the masked positions;
    2. **samples** a replacement at each masked position from the generator's softmax
       (``torch.multinomial``: no gradient flows through the sample, as in the paper);
    3. labels every real token of the corrupted input **replaced (1) only if it changed**: a
       sample equal to the original token counts as original (0);
    4. runs the **discriminator** (:class:`ElectraForPreTraining`) on the corrupted input.

    ``loss = mlm_loss + disc_weight * disc_loss`` (the paper's lambda = 50). The two share one
    embedding module (token, position and type tables and their LayerNorm, width ``E``), so
    the generator's tied decoder is the discriminator's token table too. After pretraining
    the discriminator is the model kept (``self.discriminator.electra`` is the encoder).

    Kept from the paper: the small generator at the same depth, the shared embeddings, one
    optimizer for both, sampling with no gradient, "replaced only if changed", lambda = 50, the
    85/15 masking. Changed or dropped: ``torch.multinomial`` instead of the code's Gumbel-max
    trick (the same distribution); no cap on masked positions per row (the code's
    ``max_predictions_per_seq``); the paper's scale (ELECTRA-small: 12 layers, 1M steps of 128
    sequences of 128 tokens).
    """

    def __init__(self, discriminator: ElectraConfig, generator: ElectraConfig | None = None,
                 disc_weight: float = 50.0):
        super().__init__()
        generator = generator if generator is not None else generator_config(discriminator)
        check_generator_fits(generator, discriminator)
        if not disc_weight > 0:
            raise ValueError(f"disc_weight={disc_weight!r} must be positive (ELECTRA uses 50)")
        self.config, self.disc_weight = discriminator, float(disc_weight)
        self.generator = ElectraForMaskedLM(generator)
        self.discriminator = ElectraForPreTraining(discriminator)
        shared = self.discriminator.electra.embeddings
        self.generator.electra.embeddings = shared  # one embedding module for both
        self.generator.generator_lm_head.weight = shared.word_embeddings.weight

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> ElectraPretrainingOutput:
        if labels is None:
            raise ValueError("ElectraPretraining needs masked-LM labels (the original id at each masked position, "
                             "-100 elsewhere); mask the batch first, e.g. with bertmini.masking.MaskedBatches(..., "
                             "**bertmini.variants.electra.MASKING)")
        gen = self.generator(input_ids, token_type_ids, attention_mask, labels=labels, keep_logits=True)
        with torch.no_grad():
            probs = torch.softmax(gen.mlm_logits.float(), dim=-1)
            sampled = torch.multinomial(probs, 1).squeeze(-1) if len(probs) else gen.masked_labels
            original = torch.where(labels == -100, input_ids, labels)
            corrupted = input_ids.clone()
            corrupted[labels != -100] = sampled.to(corrupted.dtype)
            replaced = (corrupted != original).long()
        disc = self.discriminator(corrupted, token_type_ids, attention_mask, labels=replaced)
        real = torch.ones_like(replaced, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return ElectraPretrainingOutput(
            loss=gen.mlm_loss + self.disc_weight * disc.loss, mlm_loss=gen.mlm_loss, mlm_accuracy=gen.mlm_accuracy,
            disc_loss=disc.loss, disc_accuracy=disc.accuracy,
            replaced_share=replaced[real].float().mean(), corrupted_ids=corrupted, replaced=replaced)
