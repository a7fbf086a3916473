"""Pictures of BERT, drawn from a real model or config so that they cannot drift from the code.

Each function returns a matplotlib ``Figure`` (show it with ``plt.show()``):

* :func:`recipe_diagram`: the two-step recipe, pretrain once, then fine-tune for each task;
* :func:`input_diagram`: token + segment + position embeddings of a real sentence pair;
* :func:`encoder_block_diagram`: one post-LN ``BertLayer``, a tensor shape on every arrow;
* :func:`multi_head_diagram`: the hidden size split into heads and merged again;
* :func:`pretrain_finetune_diagram`: one encoder, the pretraining heads swapped for a task head;
* :func:`task_heads_diagram`: the four shapes of fine-tuning (the BERT paper's Figure 4).

Every id, size and shape drawn is read from the arguments, and the shapes come from *running*
bertmini's own modules (forward hooks, or the modules' ``split_heads``/``merge_heads``): change
the model and the picture changes. A picture drawn from a config alone runs the modules on
PyTorch's ``meta`` device, which computes shapes without numbers and draws no random numbers,
so drawing never changes a chapter's random stream. Figures are 8 inches wide (the web book's
page) with no text under 8 points.

Not handled: the variants of chapter 6 (RoBERTa, ALBERT, ELECTRA), inputs longer than one row of
boxes shows (:data:`MAX_TOKENS`), padding.
"""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from .attention import scaled_dot_product_attention
from .config import IGNORE_INDEX, BertConfig
from .model import BertAttention, BertLayer, BertModel
from .runtime import eval_mode
from .task_heads import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification

WIDTH = 8.0        # inches: the web book's page
MAX_TOKENS = 14    # the most tokens one row of boxes shows legibly at that width
COLORS = {         # (fill, edge) for each role a box plays
    "token": ("#eeeeee", "#888888"), "word": ("#fff2cc", "#c9a227"), "segment": ("#d9eedf", "#55a868"),
    "segment B": ("#b3dcbf", "#55a868"), "position": ("#e8e1f3", "#8172b3"), "data": ("#f5f5f5", "#888888"),
    "attention": ("#fbe3d4", "#dd8452"), "ffn": ("#dbe5f1", "#4c72b0"), "norm": ("#fff2cc", "#c9a227"),
    "encoder": ("#dbe5f1", "#4c72b0"), "pretrain": ("#fbe3d4", "#dd8452"), "new": ("#d9eedf", "#55a868"),
}


# --------------------------------------------------------------------------- drawing helpers


def _canvas(height: float, title: str):
    """A figure whose data coordinates are inches from the bottom left, with a title."""
    fig = plt.figure(figsize=(WIDTH, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, WIDTH), ylim=(0, height))
    ax.axis("off")
    ax.set_title(title, fontsize=12, fontweight="bold", y=1 - 0.12 / height, va="top")
    return fig, ax


def _box(ax, x, y, w, h, text, role="token", fontsize=9, facecolor=None, **text_kw):
    """A rounded box centred on (x, y) with ``text`` in it."""
    face, edge = COLORS[role]
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.05",
                                facecolor=facecolor or face, edgecolor=edge, lw=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, **text_kw)


def _arrow(ax, start, end, label=None, side="right", color="#444444"):
    """An arrow from ``start`` to ``end``, with ``label`` (a tensor shape) beside its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, lw=1.1, color=color,
                                 shrinkA=0, shrinkB=0))
    if label is not None:
        right = side == "right"
        ax.text((start[0] + end[0]) / 2 + (0.08 if right else -0.08), (start[1] + end[1]) / 2, label,
                ha="left" if right else "right", va="center", fontsize=8, family="monospace")


def _shape(shape) -> str:
    return str(tuple(int(n) for n in shape))


def _check_config(config) -> BertConfig:
    if not isinstance(config, BertConfig):
        hint = " (for a model, pass model.config)" if hasattr(config, "config") else ""
        raise TypeError(f"expected a bertmini BertConfig, got {type(config).__name__}{hint}; convert a "
                        "transformers config with BertConfig.from_hf(hf_config)")
    return config


def _check_sizes(**sizes) -> None:
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")


def _encoder_of(model) -> BertModel:
    encoder = getattr(model, "bert", model)
    if not isinstance(encoder, BertModel):
        raise TypeError(f"expected a bertmini BertModel or a model with one as .bert (a head of "
                        f"bertmini.heads or bertmini.task_heads), got {type(model).__name__}")
    return encoder


def _output_shapes(model: torch.nn.Module, names, run) -> dict[str, tuple[int, ...]]:
    """Call ``run()`` in eval mode with a forward hook on each named submodule of ``model``;
    the shape of what each one returned (of the first tensor, if it returned several)."""
    shapes = {}

    def hook(name):
        def record(module, inputs, output):
            shapes[name] = tuple((output[0] if isinstance(output, tuple) else output).shape)
        return record

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    try:
        with eval_mode(model):
            run()
    finally:
        for handle in handles:
            handle.remove()
    return shapes


# --------------------------------------------------------------------------- chapter 0: the recipe


def recipe_diagram(corpus: str = "Wikipedia", corpus_words: int | None = None, task: str = "sentiment",
                   task_examples: int | None = None, labels=("positive", "negative")):
    """BERT's recipe: step 1 pretrains an encoder on unlabelled text (masked LM + next sentence
    prediction); step 2 copies it, adds a small new head and fine-tunes on a labelled task.
    ``corpus_words`` and ``task_examples``, computed by the caller, are written on the data."""
    fig, ax = _canvas(3.9, "BERT's recipe: pretrain once, fine-tune for each task")
    y1, y2 = 2.7, 0.95
    ax.text(0.12, y1 + 0.6, "Step 1  Pretraining: no labels, long, done once", fontsize=10, fontweight="bold")
    ax.text(0.12, y2 - 0.62, "Step 2  Fine-tuning: a few labels, minutes, once per task", fontsize=10,
            fontweight="bold")
    words = f"\n{corpus_words:,} words" if corpus_words is not None else ""
    examples = f"\n{task_examples:,} examples" if task_examples is not None else ""
    _box(ax, 1.0, y1, 1.7, 0.8, f"unlabelled text\n{corpus}{words}", "data")
    _box(ax, 3.4, y1, 2.1, 0.8, "BERT encoder\nlearns from the text", "encoder", fontweight="bold")
    _box(ax, 6.35, y1, 2.9, 0.8, "pretraining heads:\nfill in the blanks (masked LM)\n"
         "+ does B follow A? (NSP)", "pretrain")
    _box(ax, 1.0, y2, 1.7, 0.8, f"labelled text\n{task}{examples}", "data")
    _box(ax, 3.4, y2, 2.1, 0.8, "BERT encoder\nstarts from the\npretrained weights", "encoder",
         fontweight="bold")
    _box(ax, 5.3, y2, 1.1, 0.8, "new head\n(small)", "new")
    _box(ax, 7.15, y2, 1.4, 0.8, "label:\n" + "\nor ".join(labels), "token")
    for (x0, x1), y in [((1.85, 2.35), y1), ((4.45, 4.9), y1), ((1.85, 2.35), y2), ((4.45, 4.75), y2),
                        ((5.85, 6.45), y2)]:
        _arrow(ax, (x0, y), (x1, y))
    _arrow(ax, (3.4, y1 - 0.4), (3.4, y2 + 0.4))
    ax.text(3.5, (y1 + y2) / 2, "copy the weights; drop the pretraining heads", fontsize=9, va="center")
    return fig


# --------------------------------------------------------------------------- chapter 3: the input


def embedding_shapes(model, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
    """Run ``model``'s embeddings on one encoded input: the shape each lookup, the LayerNorm
    and the dropout return, and the shape of each embedding table (``<name>.weight``)."""
    emb = _encoder_of(model).embeddings
    names = ["word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm", "dropout"]
    device = emb.word_embeddings.weight.device
    shapes = _output_shapes(emb, names, lambda: emb(input_ids.to(device), token_type_ids.to(device)))
    shapes.update({f"{name}.weight": tuple(getattr(emb, name).weight.shape) for name in names[:3]})
    return shapes


def input_diagram(model, tokenizer, text_a: str, text_b: str | None = None):
    """BERT's input for a real sentence pair, as the BERT paper (Figure 2) and d2l draw it: the
    tokens, their ids from ``tokenizer``, the segment and position ids, the three embedding rows
    summed, then LayerNorm and dropout; the table sizes from ``model``'s weights and the shapes
    from running its embeddings."""
    enc = tokenizer.encode(text_a, text_b)
    n = len(enc.ids)
    if n > MAX_TOKENS:
        raise ValueError(f"the input is {n} tokens; the picture shows at most {MAX_TOKENS} at the page's "
                         "width: pass shorter sentences")
    vocab_size = _encoder_of(model).config.vocab_size
    if max(enc.ids) >= vocab_size:
        raise ValueError(f"the tokenizer gives id {max(enc.ids)}, outside the model's vocabulary of {vocab_size}; "
                         "pass the tokenizer the model was trained with")
    shapes = embedding_shapes(model, torch.tensor([enc.ids]), torch.tensor([enc.token_type_ids]))
    fig, ax = _canvas(4.9, "BERT's input: three embeddings, summed, for every token")
    cell = min(0.62, (WIDTH - 2.2) / n)
    xs = [2.15 + cell * (i + 0.5) for i in range(n)]
    ax.text(0.1, 4.35, "tokens", fontsize=9, va="center", fontweight="bold")
    for x, token in zip(xs, enc.tokens):
        _box(ax, x, 4.35, cell - 0.06, 0.36, token, "token", fontsize=8, family="monospace", gid="tokens")
    rows = [(3.6, "word", enc.ids, "token embeddings", "word_embeddings", "input_ids"),   # ids in the boxes
            (2.75, "segment", enc.token_type_ids, "segment embeddings", "token_type_embeddings", "token_type_ids"),
            (1.9, "position", range(n), "position embeddings", "position_embeddings", "position_ids")]
    for y, role, values, name, table, ids in rows:
        ax.text(0.1, y + 0.12, name, fontsize=9, va="center", fontweight="bold")
        ax.text(0.1, y - 0.14, f"{table}\n{' × '.join(map(str, shapes[table + '.weight']))} table",
                fontsize=8, va="center", family="monospace", linespacing=1.1)
        for x, v in zip(xs, values):
            _box(ax, x, y, cell - 0.06, 0.36, str(v), "segment B" if role == "segment" and v else role,
                 fontsize=8, family="monospace", gid=ids)   # gid: each row's texts can be found by name
            if role != "position":
                ax.text(x, y - 0.42, "+", ha="center", va="center", fontsize=10, fontweight="bold")
    middle = (xs[0] + xs[-1]) / 2
    for x in xs:
        _arrow(ax, (x, 1.7), (x, 1.32))
    _box(ax, middle, 1.1, xs[-1] - xs[0] + cell - 0.06, 0.42, f"sum {_shape(shapes['word_embeddings'])} → "
         f"LayerNorm → dropout → {_shape(shapes['dropout'])}", "norm", family="monospace")
    ax.text(0.1, 1.1, "embeddings.LayerNorm\nembeddings.dropout", fontsize=8, va="center", family="monospace",
            linespacing=1.1)
    _arrow(ax, (middle, 0.87), (middle, 0.5))
    ax.text(middle, 0.3, f"to the encoder: one {shapes['dropout'][-1]}-wide vector for each of the {n} tokens",
            ha="center", va="center", fontsize=9)
    return fig


# --------------------------------------------------------------------------- chapter 3: the layer


def layer_shapes(config: BertConfig, batch: int, seq: int) -> dict:
    """Run one ``BertLayer`` of ``config`` (on the meta device) on a ``(batch, seq, hidden_size)``
    input: the shape each submodule returns, by its name, and ``input``, ``probs``, ``output``."""
    _check_sizes(batch=batch, seq=seq)
    names = ["attention.self", "attention.output.dense", "attention.output.dropout", "attention.output.LayerNorm",
             "intermediate.dense", "intermediate", "output.dense", "output.dropout", "output.LayerNorm"]
    result = {}
    with torch.device("meta"):
        layer = BertLayer(_check_config(config))
        x = torch.empty(batch, seq, config.hidden_size)
        shapes = _output_shapes(layer, names, lambda: result.update(zip(("output", "probs"), layer(x, None, True))))
    return {"input": tuple(x.shape), **shapes, **{k: tuple(v.shape) for k, v in result.items()}}


def encoder_block_diagram(config: BertConfig, batch: int = 2, seq: int = 5):
    """One post-LN encoder layer, bottom to top as the Transformer paper draws it: multi-head
    self-attention, dropout, add & LayerNorm, the feed-forward (GELU in between), dropout, add &
    LayerNorm. Each arrow carries the shape bertmini's ``BertLayer`` returns there for a
    ``(batch, seq, hidden_size)`` input; the module names stand beside the boxes."""
    s = layer_shapes(config, batch, seq)
    c = config
    fig, ax = _canvas(7.0, f"One encoder layer (of {c.num_hidden_layers}): shapes for B = {batch} "
                      f"sequences of T = {seq} tokens")
    x, w, h = 2.6, 2.5, 0.42
    boxes = [  # (y, text, role, module name, shape of what it returns)
        (1.0, f"multi-head self-attention\n{c.num_attention_heads} heads × d_head {c.head_dim}", "attention",
         "attention.self: query, key, value\nattention.output.dense", s["attention.output.dense"]),
        (1.75, "dropout", "token", "attention.output.dropout", s["attention.output.dropout"]),
        (2.5, "add & LayerNorm", "norm", "attention.output.LayerNorm", s["attention.output.LayerNorm"]),
        (3.35, f"Linear {c.hidden_size} → {c.intermediate_size}, {c.hidden_act.upper()}", "ffn",
         "intermediate.dense", s["intermediate"]),
        (4.1, f"Linear {c.intermediate_size} → {c.hidden_size}", "ffn", "output.dense", s["output.dense"]),
        (4.85, "dropout", "token", "output.dropout", s["output.dropout"]),
        (5.6, "add & LayerNorm", "norm", "output.LayerNorm", s["output.LayerNorm"]),
    ]
    ax.add_patch(FancyBboxPatch((0.75, 0.5), 5.8, 5.5, boxstyle="round,pad=0,rounding_size=0.15",
                                facecolor="#f7f7f7", edgecolor="#bbbbbb", lw=1.0, zorder=0))
    ax.text(6.7, 3.25, f"× {c.num_hidden_layers}\nlayers", fontsize=12, fontweight="bold", va="center")
    _arrow(ax, (x, 0.0), (x, 1.0 - h / 2))
    ax.text(x + 0.08, 0.22, f"input {_shape(s['input'])}", fontsize=8, family="monospace", va="center")
    for i, (y, text, role, name, out) in enumerate(boxes):
        _box(ax, x, y, w, h, text, role)
        ax.text(x + w / 2 + 0.15, y, name, fontsize=8, family="monospace", va="center", linespacing=1.1)
        last = i + 1 == len(boxes)
        _arrow(ax, (x, y + h / 2), (x, 6.35 if last else boxes[i + 1][0] - h / 2),
               label=f"output {_shape(out)}" if last else _shape(out), side="left")
    xr = x - w / 2 - 0.35   # the residual connections go round each sublayer into its add & LayerNorm
    for y0, y1 in [(0.62, 2.5), (2.5 + h / 2 + 0.07, 5.6)]:
        ax.plot([x, xr, xr], [y0, y0, y1], color="#888888", lw=1.1)
        _arrow(ax, (xr, y1), (x - w / 2, y1), color="#888888")
        ax.text(xr - 0.1, (y0 + y1) / 2, "residual", rotation=90, fontsize=8, color="#666666", va="center",
                ha="right")
    ax.text(0.15, 6.45, f"H = hidden_size = {c.hidden_size}, intermediate_size = {c.intermediate_size}; "
            f"attention weights {_shape(s['probs'])}", fontsize=9, va="center")
    return fig


# --------------------------------------------------------------------------- chapter 3: the heads


def head_shapes(config: BertConfig, seq: int) -> dict:
    """Run one attention sublayer of ``config`` (on the meta device) step by step on one
    sequence of ``seq`` tokens, with ``BertSelfAttention``'s own ``split_heads`` and
    ``merge_heads``: the shape after each step, without the batch dimension."""
    _check_sizes(seq=seq)
    with torch.device("meta"):
        attention = BertAttention(_check_config(config))
        heads = attention.self
        x = torch.empty(1, seq, config.hidden_size)
        q, k, v = (proj(x) for proj in (heads.query, heads.key, heads.value))
        q_heads, k_heads, v_heads = (heads.split_heads(t) for t in (q, k, v))
        context, probs = scaled_dot_product_attention(q_heads, k_heads, v_heads)
        merged = heads.merge_heads(context)
        out = attention.output.dense(merged)
    steps = dict(x=x, q=q, q_heads=q_heads, probs=probs, context=context, merged=merged, output=out)
    return {name: tuple(t.shape[1:]) for name, t in steps.items()}


def _head_color(i: int, n_heads: int, alpha: float = 1.0):
    """One hue per head, evenly around the colour wheel."""
    r, g, b, _ = matplotlib.colormaps["hsv"](i / n_heads)
    return (0.8 * r, 0.8 * g, 0.8 * b, alpha)


def _striped(ax, x, y, w, h, n_heads, label):
    """A ``(seq, hidden)`` matrix as a bar cut into one coloured slice per head."""
    for i in range(n_heads):
        ax.add_patch(Rectangle((x - w / 2 + i * w / n_heads, y - h / 2), w / n_heads, h, lw=0.4,
                               facecolor=_head_color(i, n_heads, 0.3), edgecolor="white"))
    ax.add_patch(Rectangle((x - w / 2, y - h / 2), w, h, fill=False, edgecolor="#666666", lw=0.8))
    ax.text(x, y, label, ha="center", va="center", fontsize=9, family="monospace")


def multi_head_diagram(config: BertConfig, seq: int = 5):
    """Multi-head self-attention on one sequence, bottom to top: the query, key and value
    projections; the hidden size cut into one slice of ``d_head`` per head (``split_heads``);
    attention in every head; the slices side by side again (``merge_heads``); the output
    projection. Shapes from running ``BertAttention``; one colour per head."""
    s = head_shapes(config, seq)
    n, d, hidden = config.num_attention_heads, config.head_dim, config.hidden_size
    shown = list(range(n)) if n <= 4 else [0, 1, None, n - 1]   # None: the heads left out
    fig, ax = _canvas(6.3, f"Multi-head self-attention: H = {hidden} = {n} heads × d_head {d}")
    cx, bar = 3.6, 2.0
    xs = [1.25, 3.6, 5.95]
    _box(ax, cx, 0.35, 2.6, 0.36, f"X {_shape(s['x'])}: T = {seq} tokens", "token", family="monospace")
    for x, name in zip(xs, ("query", "key", "value")):
        _arrow(ax, (cx, 0.53), (x, 0.98))
        _box(ax, x, 1.2, 2.0, 0.42, f"Linear {hidden} → {hidden}\nattention.self.{name}", "attention", fontsize=8)
        _arrow(ax, (x, 1.41), (x, 1.75))
        _striped(ax, x, 1.95, bar, 0.36, n, f"{name[0].upper()} {_shape(s['q'])}")
    ax.text(6.75, 2.6, f"split_heads\n{_shape(s['q'])}\n→ {_shape(s['q_heads'])}", fontsize=8,
            family="monospace", va="center")
    for x, i in zip([0.25 + 1.6 * (k + 0.5) for k in range(len(shown))], shown):
        if i is None:
            ax.text(x, 3.45, "...", ha="center", va="center", fontsize=14)
            continue
        for bx in xs:   # slice i of Q, K and V goes to head i, and its output to slice i
            ax.plot([bx - bar / 2 + (i + 0.5) * bar / n, x], [2.13, 3.05], color=_head_color(i, n), lw=0.9)
        ax.plot([x, cx - bar / 2 + (i + 0.5) * bar / n], [3.85, 4.47], color=_head_color(i, n), lw=0.9)
        _box(ax, x, 3.45, 1.45, 0.8, f"head {i + 1}\n" + r"$\mathrm{softmax}(QK^\top/\sqrt{%d})\,V$" % d
             + f"\nweights {_shape(s['probs'][1:])}\nout {_shape(s['context'][1:])}", "token", fontsize=8,
             facecolor=_head_color(i, n, 0.15))
    ax.text(6.75, 4.3, f"merge_heads\n{_shape(s['context'])}\n→ {_shape(s['merged'])}", fontsize=8,
            family="monospace", va="center")
    _striped(ax, cx, 4.65, bar, 0.36, n, f"concat {_shape(s['merged'])}")
    _arrow(ax, (cx, 4.83), (cx, 5.13))
    _box(ax, cx, 5.35, 2.6, 0.42, f"Linear {hidden} → {hidden}\nattention.output.dense", "attention", fontsize=8)
    _arrow(ax, (cx, 5.56), (cx, 5.9), label=f"output {_shape(s['output'])}")
    return fig


# --------------------------------------------------------------------------- chapters 4 and 5: heads


def _encoder_over(ax, x0, width, y, tokens, text):
    """A row of token boxes centred at height ``y`` under an encoder box; the x of each token.
    The encoder's outputs leave its top at ``y + 0.96``."""
    step = width / len(tokens)
    xs = [x0 + step * (i + 0.5) for i in range(len(tokens))]
    for x, token in zip(xs, tokens):
        _box(ax, x, y, step - 0.05, 0.32, token, "token", fontsize=8, family="monospace")
        _arrow(ax, (x, y + 0.16), (x, y + 0.4))
    _box(ax, x0 + width / 2, y + 0.68, width, 0.56, text, "encoder")
    return xs


def _generic_input(tokens, vocab_size, device=None):
    """Ids and segment ids (0 up to the first [SEP], 1 after) to run a model on a picture's
    generic tokens; the ids are arbitrary, only the shapes are drawn."""
    first_sep = tokens.index("[SEP]")
    types = [0 if i <= first_sep else 1 for i in range(len(tokens))]
    ids = torch.arange(len(tokens)) % vocab_size
    return ids[None].to(device), torch.tensor([types], device=device)


def _parameters_by_part(model, parts) -> dict[str, int]:
    """Parameters per part (``bert``, ``cls.predictions``, ``classifier``...), each tensor once."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = next((pre for pre in parts if name.startswith(pre + ".")), name.rsplit(".", 1)[0])
        counts[part] = counts.get(part, 0) + p.numel()
    return counts


def pretrain_finetune_diagram(pretrained, finetuned, **head_kwargs):
    """The BERT paper's Figure 1: one encoder used twice. Left, ``pretrained`` (a
    ``BertForPreTraining``) with its masked-LM head, whose decoder is tied to the word embeddings
    (if it is), and its NSP head on ``[CLS]``; right, ``finetuned`` with its new head: a model of
    :mod:`bertmini.task_heads`, or one of their classes, then built around ``pretrained.bert``
    with ``head_kwargs`` (e.g. ``num_labels=2``) without drawing from torch's random stream.
    Parameter counts come from the two models, output shapes from a forward pass of each."""
    if not hasattr(getattr(pretrained, "cls", None), "seq_relationship"):
        raise TypeError(f"pretrained must be a BertForPreTraining (MLM and NSP heads), got {type(pretrained).__name__}")
    device = pretrained.bert.embeddings.position_ids.device
    if isinstance(finetuned, type):
        with torch.random.fork_rng(devices=[]):   # the new head's random init leaves the stream as it was
            finetuned = finetuned.from_encoder(pretrained.bert, **head_kwargs).to(device)
    _encoder_of(finetuned)
    left = ["[CLS]", "A1", "[MASK]", "[SEP]", "B1", "B2", "[SEP]"]
    right = ["[CLS]", "A1", "A2", "[SEP]", "B1", "B2", "[SEP]"]
    ids, types = _generic_input(left, pretrained.config.vocab_size, device)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, left.index("[MASK]")] = 0   # one masked position: the MLM head scores only there
    with eval_mode(pretrained), eval_mode(finetuned):
        pre = pretrained(ids, types, labels=labels)
        fine = finetuned(ids, types)
    old = _parameters_by_part(pretrained, ["bert", "cls.predictions", "cls.seq_relationship"])
    new = {part: n for part, n in _parameters_by_part(finetuned, ["bert"]).items() if part != "bert"}
    tied = pretrained.cls.predictions.decoder.weight is pretrained.bert.embeddings.word_embeddings.weight
    fig, ax = _canvas(4.2, "Pretraining and fine-tuning: one encoder, the heads swapped")
    ax.text(0.15, 3.7, f"Pretraining: {type(pretrained).__name__}", fontsize=10, fontweight="bold", va="center")
    ax.text(4.15, 3.7, f"Fine-tuning: {type(finetuned).__name__}", fontsize=10, fontweight="bold", va="center")
    xs = _encoder_over(ax, 0.15, 3.6, 0.35, left, f"BERT encoder (bert)\n{old['bert']:,} parameters")
    _box(ax, 0.85, 2.65, 1.4, 0.95, f"NSP head, dropped\ncls.seq_relationship\n{old['cls.seq_relationship']:,} "
         f"parameters\n→ {_shape(pre.nsp_logits.shape)}", "pretrain", fontsize=8)
    _box(ax, 2.7, 2.65, 2.1, 0.95, f"MLM head, dropped\ncls.predictions\n{old['cls.predictions']:,} "
         f"parameters\n{'decoder tied to word_embeddings' if tied else 'decoder: its own weights'}\n"
         f"→ {_shape(pre.mlm_logits.shape)} at the [MASK]", "pretrain", fontsize=8)
    _arrow(ax, (xs[0], 1.31), (xs[0], 2.2), label="[CLS]")
    _arrow(ax, (xs[2], 1.31), (xs[2] + 0.35, 2.2), label="[MASK]")
    xs = _encoder_over(ax, 4.15, 3.6, 0.35, right, f"the same encoder (bert)\ncopied: "
                       f"{finetuned.bert.num_parameters():,} parameters")
    on_cls = fine.logits.dim() == 2   # one row of logits per input: the head reads [CLS]
    head = f"new head, random init\n{', '.join(new)}\n{sum(new.values()):,} parameters\n→ {_shape(fine.logits.shape)}"
    _box(ax, xs[0] + 0.85 if on_cls else 5.95, 2.65, 2.0 if on_cls else 3.6, 0.95, head, "new", fontsize=8)
    for x in xs[:1] if on_cls else xs:
        _arrow(ax, (x, 1.31), (x, 2.2), label="[CLS]" if on_cls else None)
    _arrow(ax, (3.78, 1.03), (4.12, 1.03))
    ax.text(3.95, 1.22, "copy", ha="center", fontsize=8)
    return fig


def task_heads_diagram(config: BertConfig, num_labels: int = 2, num_tags: int = 3):
    """The BERT paper's Figure 4: four shapes of fine-tuning, one encoder and a small head each:
    (a) a sentence -> a label from ``[CLS]``, (b) a pair -> a label, (c) a tag per word, on its
    first piece (``##`` pieces and specials get ``IGNORE_INDEX``, left out of the loss), (d) a span: a
    start and an end score per token. The heads of :mod:`bertmini.task_heads` are built on the
    meta device and run, so the class names and output shapes are theirs."""
    _check_sizes(num_labels=num_labels, num_tags=num_tags)
    with torch.device("meta"):
        encoder = BertModel(_check_config(config))
        classifier = BertForSequenceClassification.from_encoder(encoder, num_labels)
        models = [classifier, classifier, BertForTokenClassification.from_encoder(encoder, num_tags),
                  BertForQuestionAnswering.from_encoder(encoder)]
    panels = [("(a) one sentence → a label", ["[CLS]", "Tok1", "Tok2", "Tok3", "[SEP]"]),
              ("(b) a sentence pair → a label", ["[CLS]", "A1", "A2", "[SEP]", "B1", "B2", "[SEP]"]),
              ("(c) tagging: a label per word", ["[CLS]", "Tok1", "Tok2", "##b", "Tok3", "[SEP]"]),
              ("(d) a span: where the answer is", ["[CLS]", "Q1", "Q2", "[SEP]", "P1", "P2", "P3", "[SEP]"])]
    fig, ax = _canvas(5.8, "Four ways to fine-tune: one encoder, a different head")
    for k, ((title, tokens), model) in enumerate(zip(panels, models)):
        x0, y0 = 0.15 + 4.0 * (k % 2), 2.95 - 2.75 * (k // 2)
        with torch.device("meta"):
            out = model(*_generic_input(tokens, config.vocab_size, "meta"))
        head = "qa_outputs" if k == 3 else "classifier"
        ax.text(x0, y0 + 2.3, title, fontsize=10, fontweight="bold", va="center")
        ax.text(x0, y0 + 2.03, f"{type(model).__name__}: {head} → {_shape(out.logits.shape)}", fontsize=8,
                family="monospace", va="center")
        xs = _encoder_over(ax, x0, 3.6, y0, tokens, f"BERT encoder: {config.num_hidden_layers} layers × "
                           f"{config.hidden_size}")
        _task_head(ax, k, xs, y0 + 0.96, tokens)
    return fig


def _task_head(ax, k, xs, y, tokens):
    """What panel ``k`` of :func:`task_heads_diagram` puts on the encoder's outputs (at height ``y``)."""
    if k < 2:   # the pooled [CLS] vector -> one label
        _arrow(ax, (xs[0], y), (xs[0], y + 0.35), label="pooled [CLS]")
        _box(ax, xs[0] + 1.05, y + 0.6, 2.2, 0.5, "one label for the whole input", "new", fontsize=8)
        return
    for x, token in zip(xs, tokens):
        _arrow(ax, (x, y), (x, y + 0.3))
        if k == 2:   # one tag per word, on its first piece
            counted = token not in ("[CLS]", "[SEP]") and not token.startswith("##")
            _box(ax, x, y + 0.5, 0.5, 0.36, "tag" if counted else str(IGNORE_INDEX), "new" if counted else "token",
                 fontsize=8)
    if k == 3:
        _box(ax, (xs[0] + xs[-1]) / 2, y + 0.5, 3.5, 0.36, "a start and an end score per token", "new",
             fontsize=8)
        for token, word in (("P1", "start"), ("P3", "end")):
            ax.text(xs[tokens.index(token)], y + 0.85, word, ha="center", va="center", fontsize=8,
                    fontweight="bold", color=COLORS["new"][1])
