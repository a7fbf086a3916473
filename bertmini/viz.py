"""Figures and explorers for the book: matplotlib first, ipywidgets where a kernel runs.

Every interactive explorer has a static twin that draws the same thing with
matplotlib, so the web book (which has no kernel) still shows it.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Patch, Rectangle

from .config import IGNORE_INDEX

# --------------------------------------------------------------------------- widgets need a kernel

# The book's build (_ext/bertmini_book.py) fills this placeholder with the links of the page's own
# launch buttons; anywhere else it stays empty.
LAUNCH_LINKS = '<span class="bertmini-launch-links"></span>'


class KernelNote:
    """What an explorer says above itself: it needs a running kernel (HTML, or plain text)."""

    def __init__(self, what: str, twin: str = "the static figure"):
        self.what, self.twin = what, twin

    def _repr_html_(self) -> str:
        return ('<div class="admonition note bertmini-kernel-note">'
                '<p class="admonition-title">Needs a running kernel</p>'
                f"<p>{html.escape(self.what)} redraws only while Python runs behind the page: run this "
                "notebook in Jupyter, or launch it on Colab or Binder (the rocket button at the top "
                f"of the book's page{LAUNCH_LINKS}). Without a kernel, as on the web page, "
                f"{html.escape(self.twin)} after it shows the same thing.</p></div>")

    def __repr__(self) -> str:
        return (f"{self.what} needs a running kernel (Jupyter, Colab or Binder); without one, "
                f"{self.twin} after it shows the same thing.")


def kernel_note(what: str = "This explorer", twin: str = "the static figure") -> KernelNote:
    """The note every ipywidgets explorer displays above itself (the web book has no kernel);
    ``twin`` names the static twin that follows it on the page."""
    return KernelNote(what, twin)


# --------------------------------------------------------------------------- masking (chapter 2)

MASK_KINDS = ("not selected", "[MASK]", "random", "kept")
MASK_COLORS = {"not selected": "#f2f2f2", "[MASK]": "#4c72b0", "random": "#dd8452", "kept": "#55a868",
               "special": "#ffffff"}


def masking_kinds(original_ids, inputs, labels, mask_token_id: int, special_tokens_mask=None) -> list[str]:
    """What masking did at each position of one sequence: one of ``MASK_KINDS`` (or ``special``)."""
    kinds = []
    special = [False] * len(original_ids) if special_tokens_mask is None else list(special_tokens_mask)
    for o, x, y, s in zip(list(map(int, original_ids)), list(map(int, inputs)), list(map(int, labels)), special):
        if s:
            kinds.append("special")
        elif y == IGNORE_INDEX:
            kinds.append("not selected")
        elif x == mask_token_id:
            kinds.append("[MASK]")
        elif x == o:
            kinds.append("kept")
        else:
            kinds.append("random")
    return kinds


def _encode_ids(tokenizer, text: str) -> list[int]:
    enc = tokenizer.encode(text)
    return list(enc.ids if hasattr(enc, "ids") else enc)


def mask_sentence(tokenizer, text: str, mlm_probability: float = 0.15, seed: int = 0,
                  whole_word: bool = False) -> dict:
    """Mask one sentence with :class:`bertmini.masking.MLMCollator`; tokens and kinds for plotting."""
    from bertmini.masking import MLMCollator

    ids = _encode_ids(tokenizer, text)
    collator = MLMCollator(tokenizer, mlm_probability=mlm_probability, whole_word=whole_word, seed=seed)
    batch = collator([{"input_ids": ids}])
    inputs, labels = batch["input_ids"][0], batch["labels"][0]
    special = collator.is_special[torch.tensor(ids)].tolist()
    return {
        "original": tokenizer.convert_ids_to_tokens(ids),
        "shown": tokenizer.convert_ids_to_tokens(inputs.tolist()),
        "kinds": masking_kinds(ids, inputs, labels, collator.mask_token_id, special),
    }


def plot_masked_rows(rows: Sequence[tuple[str, dict]], title: str = "What the model sees",
                     max_chars: int = 125, ax=None):
    """Draw masked sentences as rows of coloured token boxes.

    ``rows`` is a list of ``(label, mask_sentence(...))``. A box shows the token the
    model sees; a selected position also shows the original (its label) underneath.
    Long sentences wrap after ``max_chars`` characters.
    """
    lines = []  # (row label or "", [(shown, original, kind)])
    for k, (label, r) in enumerate(rows):
        if k:
            lines.append(("", []))  # a gap between settings
        cur, width, first = [], 0, True
        for shown, orig, kind in zip(r["shown"], r["original"], r["kinds"]):
            w = max(len(shown), len(orig) if kind != "not selected" else 0) + 2
            if width + w > max_chars and cur:
                lines.append((label if first else "", cur))
                cur, width, first = [], 0, False
            cur.append((shown, orig, kind, width, w))
            width += w
        lines.append((label if first else "", cur))
    # room on the left for the longest row label (bold 9 pt: about 1.5 box units a character)
    left = max(30, 2 + 1.5 * max((len(label) for label, _ in lines), default=0))
    if ax is None:   # about 0.075 inch a box unit, so the text keeps its size at any max_chars
        fig, ax = plt.subplots(figsize=(0.075 * (left + max_chars + 1), 0.5 * len(lines) + 1.3))
    for li, (label, toks) in enumerate(lines):
        y = -li
        ax.text(-1, y, label, ha="right", va="center", fontsize=9, fontweight="bold")
        for shown, orig, kind, x, w in toks:
            ax.add_patch(Rectangle((x, y - 0.3), w - 0.4, 0.6, facecolor=MASK_COLORS[kind],
                                   edgecolor="#999999" if kind != "special" else "#cccccc", lw=0.6))
            color = "white" if kind in ("[MASK]",) else "black"
            ax.text(x + (w - 0.4) / 2, y + (0.07 if kind != "not selected" and kind != "special" else 0),
                    shown, ha="center", va="center", fontsize=8, color=color, family="monospace")
            if kind in ("[MASK]", "random", "kept"):
                ax.text(x + (w - 0.4) / 2, y - 0.19, orig, ha="center", va="center", fontsize=6,
                        color=color, family="monospace", style="italic")
    ax.set_xlim(-left, max_chars + 1)
    ax.set_ylim(-len(lines) + 0.4, 0.6)
    ax.set_yticks([])
    ax.set_xticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("position in the sequence (boxes; small italic text = the label the model must predict)")
    ax.set_ylabel("setting")
    ax.set_title(title, pad=22)
    # the legend names only what the figure shows (a short sentence may have no random token)
    present = {kind for _, r in rows for kind in r["kinds"]}
    kinds = [k for k in MASK_KINDS if k in present]
    ax.legend(handles=[Patch(facecolor=MASK_COLORS[k], edgecolor="#999999", label=k) for k in kinds],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False, fontsize=8)
    return ax


def plot_masking_grid(tokenizer, text: str, settings: Sequence[dict], title: str | None = None,
                      max_chars: int = 125):
    """The explorer's static twin: one row per setting (``dict(mlm_probability=, seed=, whole_word=)``);
    rows wrap after ``max_chars`` characters (a smaller value draws a narrower figure)."""
    rows = []
    for s in settings:
        p, seed, ww = s.get("mlm_probability", 0.15), s.get("seed", 0), s.get("whole_word", False)
        label = f"p={p:.2f} seed={seed}" + (" whole-word" if ww else "")
        rows.append((label, mask_sentence(tokenizer, text, p, seed, ww)))
    return plot_masked_rows(rows, title=title or "One sentence, masked under different settings",
                            max_chars=max_chars)


def masking_explorer(tokenizer, text: str, mlm_probability: float = 0.15, seed: int = 0,
                     whole_word: bool = False):
    """An ipywidgets explorer: edit the sentence, the probability, the seed, whole-word on/off.

    Needs a running kernel; :func:`plot_masking_grid` draws the same figure statically.
    """
    import ipywidgets as widgets
    from IPython.display import display

    text_w = widgets.Textarea(value=text, description="sentence", layout=widgets.Layout(width="95%", height="60px"))
    p_w = widgets.FloatSlider(value=mlm_probability, min=0.0, max=1.0, step=0.05, description="probability")
    seed_w = widgets.IntText(value=seed, description="seed")
    ww_w = widgets.Checkbox(value=whole_word, description="whole-word")
    out = widgets.Output()

    def redraw(*_):
        # Fill the Output widget directly (not `with out:`), so it also works, and keeps its
        # figure, where no front end routes captured output (nbclient, a built book).
        out.outputs = ()
        try:
            r = mask_sentence(tokenizer, text_w.value, p_w.value, int(seed_w.value), ww_w.value)
        except (ValueError, TypeError) as e:  # e.g. an empty sentence: say so, keep the widget alive
            out.append_stdout(f"cannot mask this input: {e}\n")
            return
        n_sel = sum(k in ("[MASK]", "random", "kept") for k in r["kinds"])
        n_ok = sum(k != "special" for k in r["kinds"])
        ax = plot_masked_rows([("", r)], title=f"{n_sel} of {n_ok} tokens selected "
                              f"(p={p_w.value:.2f}, seed={seed_w.value}{', whole-word' if ww_w.value else ''})")
        out.append_display_data(ax.figure)
        plt.close(ax.figure)

    for w in (text_w, p_w, seed_w, ww_w):
        w.observe(redraw, names="value")
    box = widgets.VBox([text_w, widgets.HBox([p_w, seed_w, ww_w]), out])
    redraw()
    display(kernel_note("This explorer"))
    display(box)
    return box


# --------------------------------------------------------------------------- attention (chapter 3)


def _as_matrix(weights) -> "torch.Tensor":
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"expected one (queries, keys) attention matrix, got shape {tuple(w.shape)}; "
                         "pick a batch row, layer and head first, e.g. out.attentions[layer][0, head]")
    return w


def plot_attention(weights, tokens: Sequence[str], key_tokens: Sequence[str] | None = None,
                   title: str = "Attention weights", ax=None, annotate: bool | None = None,
                   colorbar: bool = True, vmax: float | None = None, cmap: str = "viridis"):
    """Heatmap of one attention matrix: row = the query token (who looks),
    column = the key token (looked at); each row sums to 1.

    ``annotate`` writes the weights in the cells (default: only for up to 8 tokens).
    """
    w = _as_matrix(weights)
    key_tokens = list(tokens) if key_tokens is None else list(key_tokens)
    if tuple(w.shape) != (len(tokens), len(key_tokens)):
        raise ValueError(f"weights have shape {tuple(w.shape)} but there are {len(tokens)} query and "
                         f"{len(key_tokens)} key tokens")
    if ax is None:
        side = max(3.0, 0.32 * max(len(tokens), len(key_tokens)) + 1.5)
        _, ax = plt.subplots(figsize=(side + (1 if colorbar else 0), side))
    im = ax.imshow(w.numpy(), cmap=cmap, vmin=0.0, vmax=vmax if vmax is not None else max(float(w.max()), 1e-6))
    ax.set_xticks(range(len(key_tokens)), key_tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title, fontsize=10)
    if annotate is None:
        annotate = len(tokens) <= 8
    if annotate:
        top = float(w.max()) or 1.0
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if w[i, j] > 0.6 * top else "white")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax


def plot_attention_heads(layer_weights, tokens: Sequence[str], heads: Sequence[int] | None = None,
                         ncols: int = 4, title: str = "Attention per head", head_labels=None,
                         vmax: float | None = None):
    """Small multiples: one heatmap per head of one layer, on one shared colour scale
    (``vmax``, default the largest weight shown) so that heads compare fairly.
    ``layer_weights`` is ``(heads, seq, seq)`` (or ``(1, heads, seq, seq)``, a batch of one)."""
    w = torch.as_tensor(layer_weights).detach().float().cpu()
    if w.dim() == 4:
        if w.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got batch size {w.shape[0]}; pass out.attentions[layer][i]")
        w = w[0]
    if w.dim() != 3:
        raise ValueError(f"expected (heads, seq, seq), got shape {tuple(w.shape)}")
    heads = list(range(w.shape[0])) if heads is None else list(heads)
    vmax = float(w[heads].max()) if vmax is None else vmax
    nrows = (len(heads) + ncols - 1) // ncols
    cell = 0.22 * len(tokens) + 1.2
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell + 1.0, nrows * cell + 0.8), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(heads):
            ax.axis("off")
            continue
        label = head_labels[k] if head_labels is not None else f"head {heads[k]}"
        plot_attention(w[heads[k]], tokens, title=label, ax=ax, annotate=False, colorbar=False, vmax=vmax)
        if k % ncols:
            ax.set_ylabel("")
            ax.set_yticks([])
        if k < len(heads) - ncols:
            ax.set_xlabel("")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.93, 0.96 if nrows > 1 else 0.92))
    cax = fig.add_axes((0.945, 0.2, 0.012, 0.6))
    fig.colorbar(axes.flat[0].images[0], cax=cax, label="weight")
    return fig


# --------------------------------------------------------------------------- bertviz, served offline

# bertviz's JavaScript asks require.js for d3 and jQuery at these CDN addresses. In the built book
# the three files come from the book itself (``_static/bertviz/``, where the book's build puts
# them), so the views draw with no network; in Jupyter and on Colab they come from the CDN.
BERTVIZ_CDN = {
    "require": "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js",
    "d3": "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min",
    "jquery": "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min",
}
BERTVIZ_STATIC = "_static/bertviz/"   # in the book: require.js, d3.min.js, jquery.min.js
_LOADER = """
(function () {
  if (window.bertminiBertviz) return;
  // Sphinx marks its pages with data-content_root: on a page of the book, take the libraries
  // from the book's own _static folder; anywhere else (Jupyter, Colab) from the CDN.
  var root = document.documentElement.getAttribute("data-content_root");
  var cdn = __CDN__, libs = {};
  if (root === null) {
    libs = {require: cdn.require, d3: cdn.d3, jquery: cdn.jquery};
  } else {
    var base = new URL(root + "__STATIC__", document.baseURI).href;
    libs = {require: base + "require.js", d3: base + "d3.min", jquery: base + "jquery.min"};
  }
  libs.ready = new Promise(function (resolve, reject) {
    function load() {
      if (typeof window.requirejs === "function") { resolve(); return; }
      var s = document.createElement("script");
      s.src = libs.require;
      s.onload = resolve;
      s.onerror = function () { reject(new Error("cannot load " + libs.require)); };
      document.head.appendChild(s);
    }
    // after the page's own scripts, so that none of them meets require.js's define()
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", load);
    else load();
  });
  window.bertminiBertviz = libs;
})();
"""
_FAILED = """function (err) {
  var div = document.getElementById("__ROOT__");
  if (div) div.insertAdjacentText("beforeend", "This interactive view needs require.js, d3 and "
    + "jQuery, which could not be loaded (" + err.message + "); the static figure shows the same "
    + "attention.");
}"""


class AttentionView:
    """One bertviz view as a single HTML output (``_repr_html_``), drawn by the browser.

    ``html`` holds the view's ``<div>`` and one ``<script>``; ``kind`` is ``"head_view"`` or
    ``"model_view"``; ``layers`` the layers it shows, ``n_tokens`` the sequence length.
    """

    def __init__(self, page_html: str, kind: str, layers: Sequence[int], n_tokens: int):
        self.html, self.kind, self.layers, self.n_tokens = page_html, kind, list(layers), n_tokens

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return (f"<bertviz {self.kind}: layers {self.layers}, {self.n_tokens} tokens; it draws in a "
                "browser with JavaScript, plot_attention_heads draws the same statically>")


def _offline_bertviz_html(raw: str) -> str:
    """Rewrite bertviz's ``html_action="return"`` HTML so its libraries load as ``_LOADER`` says."""
    tag = f'<script src="{BERTVIZ_CDN["require"]}"></script>'
    match = re.fullmatch(r"(.*)<script type=\"text/javascript\">\n(.*)\n</script>\s*", raw, re.S)
    root = re.search(r'<div id="(bertviz-[0-9a-f]+)"', raw)
    if raw.count(tag) != 1 or match is None or root is None:
        raise RuntimeError("bertviz's HTML is not laid out as bertmini expects (bertviz 1.4); "
                           "check bertmini.viz._offline_bertviz_html against the installed bertviz")
    markup, body = match.group(1).replace(tag, ""), match.group(2)
    for lib in ("d3", "jquery"):
        if body.count(f"'{BERTVIZ_CDN[lib]}'") != 1:
            raise RuntimeError(f"bertviz no longer asks for {lib} at {BERTVIZ_CDN[lib]}; "
                               "update bertmini.viz.BERTVIZ_CDN")
        body = body.replace(f"'{BERTVIZ_CDN[lib]}'", f"window.bertminiBertviz.{lib}")
    # bertviz's str.replace also fills the marker in its own comment: the data would be there twice
    body = re.sub(r"; // HACK: [^\n]*", ";", body, count=1)
    body = body.replace("</", "<\\/")   # a token can never close the <script> early
    loader = _LOADER.replace("__CDN__", json.dumps(BERTVIZ_CDN)).replace("__STATIC__", BERTVIZ_STATIC)
    failed = _FAILED.replace("__ROOT__", root.group(1))
    # the model view is wider than the book's column: let the reader scroll it sideways
    return (f'<div class="bertmini-attention-view" style="overflow-x: auto; max-width: 100%">\n'
            f"{markup.strip()}\n</div>\n<script type=\"text/javascript\">{loader}"
            f"window.bertminiBertviz.ready.then(function () {{\n{body}\n}}, {failed});\n</script>\n")


def _bertviz_inputs(attentions, tokens, layers, decimals):
    if hasattr(attentions, "attentions"):
        attentions = attentions.attentions
    if attentions is None:
        raise ValueError("no attention probabilities: call the model with output_attentions=True")
    attentions = tuple(a.detach().cpu() for a in attentions)
    if attentions[0].dim() != 4 or attentions[0].shape[0] != 1:
        raise ValueError("a bertviz view shows a batch of one; got attention of shape "
                         f"{tuple(attentions[0].shape)}: pass the attentions of one sequence")
    if attentions[0].shape[-1] != len(tokens):
        raise ValueError(f"{len(tokens)} tokens for attention over {attentions[0].shape[-1]} positions")
    layers = list(range(len(attentions))) if layers is None else [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < len(attentions)]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} do not exist: the model has {len(attentions)} "
                         f"layers, numbered 0 to {len(attentions) - 1}")
    # Three decimals keep the page small (bertviz writes every weight into it) and show the same.
    rounded = tuple(a.double().round(decimals=decimals) for a in attentions)
    return rounded, layers


def head_view(attentions, tokens: Sequence[str], sentence_b_start: int | None = None, *,
              layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
              decimals: int = 3) -> AttentionView:
    """bertviz's interactive ``head_view`` on bertmini's own attention probabilities.

    ``attentions`` is ``BertModelOutput.attentions`` (one ``(1, heads, seq, seq)`` tensor per
    layer, from ``model(..., output_attentions=True)`` on a batch of one) or the output itself;
    ``layers`` picks the layers to include (all by default: the page grows with layers x heads
    x tokens squared, so keep inputs short), ``heads`` the heads selected at first. The
    returned :class:`AttentionView` shows as the cell's output. It draws wherever JavaScript
    runs: in the built book with the book's own copies of require.js, d3 and jQuery, in
    Jupyter and on Colab with bertviz's CDN. Not handled: a batch of more than one sequence;
    a page without JavaScript (print) shows nothing, so keep :func:`plot_attention_heads` beside it.
    """
    from bertviz import head_view as _head_view

    rounded, layers = _bertviz_inputs(attentions, tokens, layers, decimals)
    raw = _head_view(rounded, list(tokens), sentence_b_start=sentence_b_start, include_layers=layers,
                     heads=None if heads is None else list(heads), html_action="return").data
    return AttentionView(_offline_bertviz_html(raw), "head_view", layers, len(tokens))


def model_view(attentions, tokens: Sequence[str], sentence_b_start: int | None = None, *,
               layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
               decimals: int = 3) -> AttentionView:
    """bertviz's interactive ``model_view`` (every head of every layer, small) on bertmini's attention.

    The arguments and the output are those of :func:`head_view`; ``heads`` picks the heads to
    include. The view is drawn light, to sit on the book's page. Not handled: as in
    :func:`head_view`.
    """
    from bertviz import model_view as _model_view

    rounded, layers = _bertviz_inputs(attentions, tokens, layers, decimals)
    raw = _model_view(rounded, list(tokens), sentence_b_start=sentence_b_start, include_layers=layers,
                      include_heads=None if heads is None else list(heads), display_mode="light",
                      html_action="return").data
    return AttentionView(_offline_bertviz_html(raw), "model_view", layers, len(tokens))


# --------------------------------------------------------------------------- semantic search (chapter 6c)


def search_columns(query: str, searchers: dict, k: int = 5, width: int = 26) -> str:
    """The top ``k`` results of each searcher for ``query``, side by side as text: one column per
    searcher (``{name: function(query, k) -> list of titles}``), each cut to ``width`` characters.
    The static twin of :func:`search_explorer`."""
    columns = {name: search(query, k) for name, search in searchers.items()}
    cut = lambda s: s if len(s) <= width else s[:width - 1] + "…"  # noqa: E731
    lines = [f"query: {query}", "    " + " ".join(f"{name:<{width}}" for name in columns)]
    for rank in range(k):
        row = [cut(col[rank]) if rank < len(col) else "" for col in columns.values()]
        lines.append(f"{rank + 1:>2}. " + " ".join(f"{cell:<{width}}" for cell in row))
    return "\n".join(lines)


def search_explorer(searchers: dict, query: str, k: int = 5, width: int = 26):
    """An ipywidgets explorer: type a query, press Enter, see :func:`search_columns` for it.

    Needs a running kernel; print :func:`search_columns` for fixed queries where there is none."""
    import ipywidgets as widgets
    from IPython.display import display

    box_w = widgets.Text(value=query, description="query", continuous_update=False,
                         layout=widgets.Layout(width="95%"))
    out = widgets.Output()

    def redraw(*_):
        out.outputs = ()  # filled directly, so it also shows where no front end routes output
        try:
            out.append_stdout(search_columns(box_w.value, searchers, k, width) + "\n")
        except (ValueError, TypeError) as e:  # e.g. an empty query: say so, keep the widget alive
            out.append_stdout(f"cannot search for this query: {e}\n")

    box_w.observe(redraw, names="value")
    box = widgets.VBox([box_w, out])
    redraw()
    display(kernel_note("This explorer", twin="the printed comparison"))
    display(box)
    return box
