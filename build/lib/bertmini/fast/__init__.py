"""Speed only: each module here is a faster twin of a plain function elsewhere in
bertmini, tested equal to it; the plain one is what the chapters teach.

Set ``bertmini.fast.ENABLED = False`` to run every model on its plain path (the tests
compare the two).

- ``mlm_loss``: ``masked_lm_loss``, the MLM loss and its gradients a vocabulary block at
  a time, the twin of ``F.cross_entropy(F.linear(x, W, b), labels)`` (``tests/test_fast.py``).
- ``dropout``: ``dropout``/``Dropout`` drawing four 16-bit uniforms per 64-bit random
  number on a CPU, the twin of ``F.dropout`` in distribution (``tests/test_fast.py``).
- ``attention``: the choice between ``F.scaled_dot_product_attention`` and the formula
  written out, by device and dtype (``tests/test_fast.py``).
- ``wordpiece_trainer``: ``FastWordPieceTrainer``, the twin of
  ``bertmini.tokenization.WordPieceTrainer`` (``tests/test_tokenization.py``).
"""

ENABLED = True
