"""BERT's family (chapter 6a), each a small change on top of :mod:`bertmini.model` and :mod:`bertmini.heads`.

* :mod:`~bertmini.variants.roberta`: positions past the padding id, one token type, MLM only.
* :mod:`~bertmini.variants.albert`: factorised embeddings, cross-layer sharing, sentence-order prediction.
* :mod:`~bertmini.variants.electra`: embeddings of their own width, a generator and a per-token discriminator.
* :mod:`~bertmini.variants.common`: the few pieces the three share.
* :mod:`~bertmini.variants.race`: the three and BERT pretrained on one budget, then fine-tuned alike.

Every class has the name and the parameter names of its ``transformers`` twin, and
``bertmini.hf.from_hf`` / ``to_hf`` convert both ways (``tests/test_variants.py``).
"""
from .albert import AlbertConfig, AlbertForMaskedLM, AlbertForPreTraining, AlbertModel
from .electra import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining, ElectraModel
from .roberta import RobertaConfig, RobertaForMaskedLM, RobertaModel

__all__ = [
    "AlbertConfig", "AlbertForMaskedLM", "AlbertForPreTraining", "AlbertModel",
    "ElectraConfig", "ElectraForMaskedLM", "ElectraForPreTraining", "ElectraModel",
    "RobertaConfig", "RobertaForMaskedLM", "RobertaModel",
]
