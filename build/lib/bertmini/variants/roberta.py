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


# ----------------------------------------------------------------------------- RoBERTa's recipe


def pack_full_sentences(docs, tokenizer, max_length: int = 64, whole_sentences: bool = False):
    """RoBERTa's FULL-SENTENCES inputs: contiguous text packed into rows of ``max_length`` tokens.

    ``docs`` is a list of articles, each a list of sentences of token ids
    (:func:`bertmini.nsp.tokenize_articles`). The text runs on across sentence *and* article
    boundaries, with a ``[SEP]`` where one article ends and the next begins (RoBERTa's extra
    separator); each row is ``[CLS] ... [SEP]``. RoBERTa cuts rows only at sentence ends,
    which at 512 tokens wastes little; at the book's 64 a row holds two or three sentences and
    would lose about a quarter of its tokens to padding, so by default rows are cut exactly at
    ``max_length`` (a sentence may continue in the next row). ``whole_sentences=True`` keeps
    RoBERTa's rule (a sentence longer than a row is then cut into row-sized pieces).

    No NSP, one segment: ``token_type_ids`` are all 0 and ``next_sentence_label`` is 0
    everywhere (:class:`bertmini.masking.MaskedBatches` with ``use_nsp=False`` leaves it out).
    Returns a :class:`bertmini.nsp.PretrainingData` (``special_tokens_mask`` is 1 at
    ``[CLS]``, every ``[SEP]`` and padding).
    """
    from ..nsp import PretrainingData
    from ..padding import length_mask, pad_rows

    if not isinstance(max_length, int) or max_length < 8:
        raise ValueError(f"max_length={max_length!r} is too short to pack sentences into; use 64 or more")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    budget = max_length - 2  # [CLS] ... [SEP]
    # the text as units that a row may not split: sentences (whole_sentences) or single tokens
    units: list[list[int]] = []
    for doc in (d for d in docs if d):
        if units:
            units.append([sep_id])  # the separator between two articles
        for sentence in doc:
            if whole_sentences:
                units += [sentence[i:i + budget] for i in range(0, len(sentence), budget)]
            else:
                units += [[t] for t in sentence]
    rows: list[list[int]] = []
    row: list[int] = []
    for unit in units:
        if len(row) + len(unit) > budget:
            rows.append(row)
            row = []
        if row or unit != [sep_id]:  # a row never starts with an article separator
            row += unit
    rows.append(row)
    rows = [r[:-1] if r[-1:] == [sep_id] else r for r in rows]  # [SEP] closes every row anyway
    rows = [[cls_id, *r, sep_id] for r in rows if r]
    if not rows:
        raise ValueError("no text to pack: the articles are empty")
    ids = pad_rows(rows, tokenizer.pad_token_id, length=max_length)
    special = ((ids == cls_id) | (ids == sep_id) | (ids == tokenizer.pad_token_id)).long()
    return PretrainingData(ids, torch.zeros_like(ids), length_mask([len(r) for r in rows], max_length),
                           special, torch.zeros(len(rows), dtype=torch.long))


def byte_level_bpe(texts, vocab_size: int = 8000, min_frequency: int = 2):
    """GPT-2's and RoBERTa's tokenizer kind, trained on ``texts``: the real
    ``tokenizers.ByteLevelBPETokenizer``. Every string splits into bytes first, so nothing is
    ever unknown; merges are learned by frequency, as WordPiece's are by likelihood."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    return bpe


def tokenizer_stats(pieces_of, texts) -> dict[str, float]:
    """``pieces_per_word`` (pieces over whitespace-separated words) and ``unknown_share`` (the
    share of pieces that are an unknown token, ``[UNK]`` or ``<unk>``) of a tokenizer over
    ``texts``; ``pieces_of(text)`` returns the pieces of one text as strings."""
    words = pieces = unknown = 0
    for text in texts:
        p = pieces_of(text)
        words += len(text.split())
        pieces += len(p)
        unknown += sum(t in ("[UNK]", "<unk>") for t in p)
    if words == 0:
        raise ValueError("tokenizer_stats: the texts hold no words")
    return {"pieces_per_word": pieces / words, "unknown_share": unknown / max(pieces, 1)}
