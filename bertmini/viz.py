"""Figures and explorers for the book: matplotlib first, ipywidgets where a kernel runs.

Every interactive explorer has a static twin that draws the same thing with
matplotlib, so the web book (which has no kernel) still shows it.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Patch, Rectangle

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
        elif y == -100:
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
    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 0.5 * len(lines) + 1.3))
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
    ax.set_xlim(-30, max_chars + 1)
    ax.set_ylim(-len(lines) + 0.4, 0.6)
    ax.set_yticks([])
    ax.set_xticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("position in the sequence (boxes; small italic text = the label the model must predict)")
    ax.set_ylabel("setting")
    ax.set_title(title, pad=22)
    ax.legend(handles=[Patch(facecolor=MASK_COLORS[k], edgecolor="#999999", label=k) for k in MASK_KINDS],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False, fontsize=8)
    return ax


def plot_masking_grid(tokenizer, text: str, settings: Sequence[dict], title: str | None = None):
    """The explorer's static twin: one row per setting (``dict(mlm_probability=, seed=, whole_word=)``)."""
    rows = []
    for s in settings:
        p, seed, ww = s.get("mlm_probability", 0.15), s.get("seed", 0), s.get("whole_word", False)
        label = f"p={p:.2f} seed={seed}" + (" whole-word" if ww else "")
        rows.append((label, mask_sentence(tokenizer, text, p, seed, ww)))
    return plot_masked_rows(rows, title=title or "One sentence, masked under different settings")


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
        with out:
            out.clear_output(wait=True)
            try:
                r = mask_sentence(tokenizer, text_w.value, p_w.value, int(seed_w.value), ww_w.value)
            except (ValueError, TypeError) as e:  # e.g. an empty sentence: say so, keep the widget alive
                print(f"cannot mask this input: {e}")
                return
            n_sel = sum(k in ("[MASK]", "random", "kept") for k in r["kinds"])
            n_ok = sum(k != "special" for k in r["kinds"])
            plot_masked_rows([("", r)], title=f"{n_sel} of {n_ok} tokens selected "
                             f"(p={p_w.value:.2f}, seed={seed_w.value}{', whole-word' if ww_w.value else ''})")
            plt.show()

    for w in (text_w, p_w, seed_w, ww_w):
        w.observe(redraw, names="value")
    box = widgets.VBox([text_w, widgets.HBox([p_w, seed_w, ww_w]), out])
    redraw()
    display(box)
    return box
