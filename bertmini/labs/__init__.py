"""The checkers of the workshop labs: the learner's function against bertmini and the real thing.

In a lab (``labs/NN_*.ipynb``) the learner writes one piece of BERT, then hands the function to
a checker here. The checker calls it on many cases, the edges included, and compares what
comes back with bertmini's own piece and, where one exists, with ``transformers`` or
``tokenizers``:

==============================  ========================================================  =====
checker                         the learner's function                                    lab
==============================  ========================================================  =====
``check_merge_score``           ``fn(pair_count, left_count, right_count) -> float``      1
``check_wordpiece``             ``fn(word, vocab) -> list[str]``                          1
``check_selection``             ``fn(special_tokens_mask, mlm_probability, generator)``   2
``check_mask_tokens``           ``bertmini.masking.mask_tokens``' signature               2
``check_attention``             ``fn(query, key, value, mask=None)``                      3
``check_encoder_layer``         ``fn(hidden_states, weights, num_heads, mask=None)``      3
``check_mlm_loss``              ``fn(sequence_output, labels, predictions) -> loss``      4
``check_nsp_pairs``             ``fn(docs, rng) -> list[(a, b, label)]``                  4
``check_align_labels``          ``fn(word_ids, word_labels) -> list[int]``                5
``check_best_span``             ``fn(start_logits, end_logits, allowed, max_len)``        5
``check_generator_sample``      ``fn(input_ids, labels, generator_logits) -> ids``        6
``check_replaced_labels``       ``fn(input_ids, labels, corrupted_ids) -> 0/1``           6
``check_discriminator_loss``    ``fn(logits, labels, attention_mask) -> loss``            6
==============================  ========================================================  =====

Each checker's docstring is its contract; one module per lab holds them (``wordpiece``,
``masking``, ``attention``, ``pretraining``, ``finetuning``, ``electra``), and ``core`` what they
share. A pass prints one line (``check_wordpiece: 1,284 cases passed``). The first case that
fails raises :class:`LabCheckError`, whose message names the case, what was expected, what came
back and a hint; the hint names the usual mistake when the result equals it. A
``NotImplementedError`` from the learner's function (a piece not written yet) passes through
unchanged; any other exception it raises comes back as a :class:`LabCheckError` naming the case,
with the original exception chained. Random cases come from fixed seeds, and statistical checks
allow six standard deviations, so a correct implementation passes every time, whatever order it
draws its random numbers in.

Not handled: speed (a correct but slow function passes), whether the MLM loss computes logits
only at the masked positions (the dense version gives the same number), and the GPU: every case
runs on the CPU in float32.
"""
from .attention import check_attention, check_encoder_layer
from .core import LabCheckError
from .electra import check_discriminator_loss, check_generator_sample, check_replaced_labels
from .finetuning import check_align_labels, check_best_span
from .masking import check_mask_tokens, check_selection
from .pretraining import check_mlm_loss, check_nsp_pairs
from .wordpiece import check_merge_score, check_wordpiece

__all__ = [
    "LabCheckError", "check_merge_score", "check_wordpiece", "check_selection", "check_mask_tokens",
    "check_attention", "check_encoder_layer", "check_mlm_loss", "check_nsp_pairs", "check_align_labels",
    "check_best_span", "check_generator_sample", "check_replaced_labels", "check_discriminator_loss",
]
