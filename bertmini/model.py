"""The BERT encoder (Devlin et al., 2018), exactly: real checkpoints load into it.

    embeddings  = LayerNorm(token + segment + position) -> dropout
    each layer  = x = LayerNorm(x + Dropout(Attention(x)))           # post-LN
                  x = LayerNorm(x + Dropout(W2 GELU(W1 x)))          # FFN, 4x wide
    pooler      = tanh(W h_[CLS])

Module and parameter names are those of ``transformers``' ``modeling_bert.py``
(``embeddings.word_embeddings``, ``encoder.layer.N.attention.self.query``,
``...attention.output.LayerNorm``, ``...intermediate.dense``, ``...output.dense``,
``pooler.dense``), so a real state dict loads with ``load_state_dict(strict=True)``
and a reader can compare the two files line by line.

Not handled: ``inputs_embeds`` and explicit ``position_ids``, decoder use
(causal masks, cross-attention, caches), relative positions, head masks,
gradient checkpointing. Inputs are ``(batch, seq)`` tensors only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import BertSelfAttention
from .fast.dropout import Dropout  # nn.Dropout with a cheaper random draw on a CPU
from .runtime import can_check_values
from .config import BertConfig

ACT_FN = {
    "gelu": F.gelu,  # the exact erf form
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


@dataclass
class BertModelOutput:
    """What :class:`BertModel` returns.

    ``last_hidden_state``: ``(batch, seq, hidden)``, one vector per token.
    ``pooler_output``: ``(batch, hidden)``, tanh(dense([CLS])), or None without a pooler.
    ``attentions``: one ``(batch, heads, seq, seq)`` tensor per layer if asked for, else None.
    ``hidden_states``: the embeddings and every layer's output if asked for, else None.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class BertEmbeddings(nn.Module):
    """Token + segment (token type) + learned absolute position embeddings, then
    LayerNorm and dropout. Positions are 0..seq-1 in every row."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        # Not saved with the weights (persistent=False), as in transformers.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.size(1)
        x = self.word_embeddings(input_ids)
        x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(self.position_ids[:, :seq_len])
        return self.dropout(self.LayerNorm(x))


class BertSelfOutput(nn.Module):
    """Output projection of the heads, dropout, residual, LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor,
                input_tensor: torch.Tensor) -> torch.Tensor:
        # the sublayer's output projected, plus its input (residual), normalised
        x = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(x + input_tensor)


class BertAttention(nn.Module):
    """Self-attention sublayer: ``self`` (the heads) and ``output`` (projection + residual + LN)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, mask=None, output_attentions=False):
        context, probs = self.self(hidden_states, mask, output_attentions)
        return self.output(context, hidden_states), probs


class BertIntermediate(nn.Module):
    """First half of the feed-forward: hidden -> intermediate (4x), then the activation."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT_FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(nn.Module):
    """Second half of the feed-forward: intermediate -> hidden, dropout, residual, LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor,
                input_tensor: torch.Tensor) -> torch.Tensor:
        # the sublayer's output projected, plus its input (residual), normalised
        x = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(x + input_tensor)


class BertLayer(nn.Module):
    """One encoder block: attention sublayer, then feed-forward sublayer."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states, mask=None, output_attentions=False):
        attention_output, probs = self.attention(hidden_states, mask,
                                                 output_attentions)
        intermediate = self.intermediate(attention_output)  # hidden -> 4x, GELU
        layer_output = self.output(intermediate, attention_output)  # -> hidden
        return layer_output, probs


class BertEncoder(nn.Module):
    """``num_hidden_layers`` blocks in a row."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states, mask=None, output_attentions=False, output_hidden_states=False):
        attentions, states = [], [hidden_states]
        for block in self.layer:
            hidden_states, probs = block(hidden_states, mask, output_attentions)
            attentions.append(probs)
            states.append(hidden_states)
        return (
            hidden_states,
            tuple(attentions) if output_attentions else None,
            tuple(states) if output_hidden_states else None,
        )


class BertPooler(nn.Module):
    """``tanh(dense(h_[CLS]))``: the sentence vector the NSP head and classifiers read."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertPreTrainedModel(nn.Module):
    """Base class holding ``config`` and BERT's weight initialisation, for
    :class:`BertModel` and for every model with a head (``bertmini.heads``).

    Subclasses build their modules, then call ``self.init_weights()``.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(
                f"expected a bertmini BertConfig, got {type(config).__name__}; "
                "convert a transformers config with BertConfig.from_hf(hf_config)"
            )
        self.config = config

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's init: Linear and Embedding weights ~ N(0, initializer_range), biases 0,
        the padding row of the word embeddings 0, LayerNorm weight 1 and bias 0."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        """Apply :meth:`_init_weights` to every submodule."""
        self.apply(self._init_weights)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Count parameters (each shared tensor once)."""
        seen, total = set(), 0
        for name, p in self.named_parameters():
            if exclude_embeddings and "embeddings" in name:
                continue
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total


def class_labels(labels, name: str, device: torch.device) -> torch.Tensor:
    """``labels`` (a tensor or a list) as the long tensor ``cross_entropy`` takes, for every
    head. Any integer dtype is converted (int32 from numpy, say); a float is refused, since a
    float label is a score or a probability, not a class index."""
    labels = torch.as_tensor(labels, device=device)
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must hold integer class indices, got dtype {labels.dtype}; convert with "
                        f"{name}.long() if the values are whole numbers (regression and multi-label heads are "
                        "not handled)")
    return labels.long()


def _check_values(cfg: BertConfig, input_ids, token_type_ids, attention_mask) -> None:
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= cfg.vocab_size:
        raise ValueError(
            f"input_ids contains id {lo if lo < 0 else hi}, outside the vocabulary [0, {cfg.vocab_size}); was "
            "the text encoded with a different vocabulary than this model's config.vocab_size?"
        )
    if token_type_ids is not None:
        lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
        if lo < 0 or hi >= cfg.type_vocab_size:
            raise ValueError(f"token_type_ids must be in [0, {cfg.type_vocab_size}) (segment A = 0, B = 1), "
                             f"got values in [{lo}, {hi}]")
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold 1 for real tokens and 0 for padding, nothing else")


class BertModel(BertPreTrainedModel):
    """The BERT encoder: embeddings, ``num_hidden_layers`` blocks, and (optionally) the pooler.

    >>> model = BertModel(BertConfig.preset("tiny", vocab_size=100)).eval()
    >>> out = model(torch.tensor([[2, 5, 7, 3]]))
    >>> out.last_hidden_state.shape, out.pooler_output.shape
    (torch.Size([1, 4, 128]), torch.Size([1, 128]))
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def check_inputs(self, input_ids, token_type_ids=None, attention_mask=None) -> None:
        """Raise a clear error for inputs that would otherwise fail deep inside torch
        (or, worse, silently produce garbage). Shapes and dtypes are checked always; the
        values only where reading them is free (:func:`bertmini.runtime.can_check_values`)."""
        cfg = self.config
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
        if input_ids.dim() != 2:
            hint = " (add a batch dimension with input_ids.unsqueeze(0))" if input_ids.dim() == 1 else ""
            raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}{hint}")
        if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise TypeError(f"input_ids must hold integer ids, got dtype {input_ids.dtype}")
        batch, seq = input_ids.shape
        if batch == 0 or seq == 0:
            raise ValueError(f"input_ids is empty (shape {(batch, seq)}); give at least one row holding "
                             "[CLS] and [SEP]")
        if seq > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq} is longer than max_position_embeddings={cfg.max_position_embeddings}; "
                f"truncate the input to at most {cfg.max_position_embeddings} tokens"
            )
        for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
            if t is not None and tuple(t.shape) != (batch, seq):
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)} but input_ids has shape {(batch, seq)}; "
                    f"they must match, one entry per token"
                )
        if can_check_values(input_ids):
            _check_values(cfg, input_ids, token_type_ids, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BertModelOutput:
        """``input_ids``, ``token_type_ids`` (default all 0 = segment A) and
        ``attention_mask`` (1 = token, 0 = padding; default all 1) are ``(batch, seq)``.
        ``output_attentions=True`` takes the explicit attention path and returns the
        probabilities of every layer."""
        self.check_inputs(input_ids, token_type_ids, attention_mask)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        # (batch, 1, 1, seq): the same keys hidden for every head and query. Without padding
        # the fused attention kernels run faster with no mask; finding that out costs a
        # device sync, so only a CPU looks.
        if attention_mask is not None and not (can_check_values(attention_mask) and bool(attention_mask.all())):
            mask = attention_mask.to(torch.bool)[:, None, None, :]
        hidden = self.embed(input_ids.long(), token_type_ids.long())
        hidden, attentions, states = self.encoder(hidden, mask, output_attentions, output_hidden_states)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BertModelOutput(hidden, pooled, attentions, states)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """The encoder's input: the summed embeddings (ELECTRA projects them here as well)."""
        return self.embeddings(input_ids, token_type_ids)
