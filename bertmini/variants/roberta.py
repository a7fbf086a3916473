"""RoBERTa (Liu et al., 2019): BERT's encoder, unchanged, with a new recipe and new embeddings.

What differs from BERT in the *model* is small:

* **positions start past the padding id.** A token at position ``i`` (counting real
  tokens only) gets position embedding ``pad_token_id + 1 + i``; a padding token gets the
  row ``pad_token_id``, which stays zero. So ``max_position_embeddings`` is 514 for
  512 tokens (RoBERTa's ``pad_token_id`` is 1). This comes from fairseq, where RoBERTa was
  written (``create_position_ids_from_input_ids``, as in ``transformers``);
* **one token type**: RoBERTa drops next-sentence prediction, so its checkpoints have
  ``type_vocab_size = 1`` (the config keeps the field, for checkpoints that have two);
* the **MLM head** is BERT's under other names (``lm_head.dense``, ``lm_head.layer_norm``,
  ``lm_head.decoder``), always with the exact GELU, and no NSP head exists.

Everything else (attention, feed-forward, LayerNorm placement, pooler) is
:mod:`bertmini.model`'s. The bigger changes are in the recipe (no NSP, full-sentence packing,
dynamic masking, larger batches, byte-level BPE), not in this file.

Parameter names are those of ``transformers``' ``modeling_roberta.py``
(``roberta.embeddings...``, ``lm_head...``) so ``bertmini.hf.from_hf`` / ``to_hf`` load
strictly. Not handled: explicit ``position_ids``, ``inputs_embeds``, the decoder use
(``RobertaForCausalLM``), the task heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import BertForPreTrainingOutput, masked_lm
from ..model import BertEmbeddings, BertEncoder, BertModel, BertPooler, BertPreTrainedModel
from .common import VariantConfig


@dataclass
class RobertaConfig(VariantConfig):
    """BERT's fields with RoBERTa's defaults (RoBERTa-base): a 50,265-piece byte-level BPE
    vocabulary, ``pad_token_id`` 1, one token type, 514 positions, LayerNorm eps 1e-5."""

    model_type = "roberta"
    hf_config_class = "RobertaConfig"

    vocab_size: int = 50265
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1

    @property
    def max_length(self) -> int:
        """The longest input: the positions ``0..pad_token_id`` are never used by a real token."""
        return self.max_position_embeddings - self.pad_token_id - 1


def create_position_ids_from_input_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """RoBERTa's positions: real tokens count ``padding_idx + 1, padding_idx + 2, ...`` from the
    left; padding tokens get ``padding_idx``. ``[[0, 5, 6, 2, 1, 1]]`` with ``padding_idx=1``
    gives ``[[2, 3, 4, 5, 1, 1]]``."""
    real = input_ids.ne(padding_idx).int()
    return (torch.cumsum(real, dim=1).type_as(real) * real).long() + padding_idx


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings; only the positions differ (see the module docstring)."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        # The padding row of the position table is never trained (it stays zero).
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=config.pad_token_id)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = create_position_ids_from_input_ids(input_ids, self.padding_idx)  # BERT: 0..seq-1
        x = self.word_embeddings(input_ids)
        x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class RobertaModel(BertModel):
    """:class:`bertmini.model.BertModel` with :class:`RobertaEmbeddings`; the forward pass is BERT's."""

    def __init__(self, config: RobertaConfig, add_pooling_layer: bool = True):
        BertPreTrainedModel.__init__(self, config)  # BertModel's modules, built here with RoBERTa's embeddings
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def check_inputs(self, input_ids, token_type_ids=None, attention_mask=None) -> None:
        super().check_inputs(input_ids, token_type_ids, attention_mask)
        cfg = self.config
        if input_ids.shape[1] > cfg.max_length:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} is too long for RoBERTa's positions: they start at "
                f"pad_token_id + 1 = {cfg.pad_token_id + 1}, so max_position_embeddings="
                f"{cfg.max_position_embeddings} holds at most {cfg.max_length} tokens; truncate the input to "
                f"{cfg.max_length} tokens (or build the model with max_position_embeddings="
                f"{input_ids.shape[1] + cfg.pad_token_id + 1})"
            )


class RobertaLMHead(nn.Module):
    """BERT's MLM head (``dense -> GELU -> LayerNorm -> decoder``) under RoBERTa's names;
    ``decoder.bias`` *is* ``bias`` (one tensor, two names, as in ``transformers``)."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias

    def transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(F.gelu(self.dense(hidden_states)))  # the exact GELU, whatever hidden_act says

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class RobertaForMaskedLM(BertPreTrainedModel):
    """RoBERTa as pretrained: the encoder (no pooler) and the MLM head, nothing else.

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None)`` returns a
    :class:`bertmini.heads.BertForPreTrainingOutput` (``logits``; with ``labels``, only at the
    masked positions, and ``loss``), as :class:`bertmini.heads.BertForMaskedLM` does.
    """

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.init_weights()
        self.lm_head.decoder.weight = self.roberta.embeddings.word_embeddings.weight  # tied, as in BERT

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> BertForPreTrainingOutput:
        encoded = self.roberta(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        out = BertForPreTrainingOutput()
        masked_lm(self.lm_head.transform, self.lm_head.decoder.weight, self.lm_head.decoder.bias,
                  encoded.last_hidden_state, input_ids, labels,
                  self.config.vocab_size, self.training, out)
        out.loss = out.mlm_loss
        return out
