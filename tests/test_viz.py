"""bertmini.viz's bertviz views and the explorers' kernel note (issue 21); the masking
figures say only what they show (issue 15)."""
from __future__ import annotations

import json
import re

import matplotlib.pyplot as plt
import pytest
import torch

from bertmini import viz

TOKENS = ["[CLS]", "the", "cat", "sat", "[SEP]", "it", "slept", "[SEP]"]


def attentions(layers=3, heads=4, seq=len(TOKENS), batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, seq, seq, generator=g).softmax(-1) for _ in range(layers))


def params_of(view: viz.AttentionView) -> dict:
    """The data bertviz writes into the page (its PYTHON_PARAMS)."""
    line = re.search(r"const params = (\{.*\});\n", view.html).group(1)
    return json.loads(line.replace("<\\/", "</"))


@pytest.mark.parametrize("make", [viz.head_view, viz.model_view])
def test_views_load_their_libraries_from_the_book_or_the_cdn(make):
    view = make(attentions(), TOKENS, sentence_b_start=5)
    # no <script src> of its own: the loader picks the book's _static/bertviz/ or the CDN at view time
    assert "<script src=" not in view.html and view.html.count("<script") == 1
    assert "data-content_root" in view.html and viz.BERTVIZ_STATIC in view.html
    assert "window.bertminiBertviz.d3" in view.html and "window.bertminiBertviz.jquery" in view.html
    for lib in ("d3", "jquery"):   # bertviz's own addresses survive only in the CDN fallback
        assert view.html.count(viz.BERTVIZ_CDN[lib]) == 1
    assert view._repr_html_() == view.html and make.__name__ in repr(view)


def test_a_view_holds_the_chosen_layers_rounded():
    att = attentions(layers=4)
    view = viz.head_view(att, TOKENS, layers=[1, 3])
    p = params_of(view)
    assert p["include_layers"] == [1, 3] and view.layers == [1, 3]
    shown = torch.tensor(p["attention"][0]["attn"])                    # (layers, heads, seq, seq)
    expected = torch.stack([att[1][0], att[3][0]]).double()
    assert shown.shape == expected.shape and (shown - expected).abs().max() <= 0.0005 + 1e-12
    numbers = re.findall(r"\d\.\d+", json.dumps(p["attention"][0]["attn"]))
    assert max(len(n) for n in numbers) <= 5          # three decimals: a small page


def test_the_minilm_views_of_chapter_3_stay_small():
    """MiniLM on the chapter's pair (13 tokens, 6 layers x 12 heads): the page grows little."""
    att = attentions(layers=6, heads=12, seq=13)
    tokens = [f"t{i}" for i in range(13)]
    head = viz.head_view(att, tokens, sentence_b_start=8)
    model = viz.model_view(att, tokens, sentence_b_start=8, layers=[0, 1, 2])
    assert len(head.html) < 200_000 and len(model.html) < 120_000, (len(head.html), len(model.html))


def test_a_token_cannot_close_the_script():
    view = viz.head_view(attentions(layers=1, seq=3), ["</script>", "<b>", "x"])
    script = view.html[view.html.index("<script"):]
    assert script.count("</script>") == 1 and params_of(view)["attention"][0]["left_text"][0] == "</script>"


@pytest.mark.parametrize("make", [viz.head_view, viz.model_view])
def test_bad_input_is_named(make):
    with pytest.raises(ValueError, match="batch of one"):
        make(attentions(batch=2), TOKENS)
    with pytest.raises(ValueError, match="7 tokens for attention over 8 positions"):
        make(attentions(), TOKENS[:-1])
    with pytest.raises(ValueError, match=r"layers \[3\] do not exist: the model has 3 layers"):
        make(attentions(), TOKENS, layers=[0, 3])
    with pytest.raises(ValueError, match="output_attentions=True"):
        make(None, TOKENS)


def test_a_changed_bertviz_is_caught():
    html = viz.head_view(attentions(), TOKENS).html
    with pytest.raises(RuntimeError, match="bertviz"):
        viz._offline_bertviz_html('<div id="bertviz-0"></div><script>draw()</script>')
    assert "cdnjs" in html   # the CDN stays as the fallback outside the book


def test_the_masking_explorer_says_it_needs_a_kernel(monkeypatch):
    pytest.importorskip("ipywidgets")
    import IPython.display
    from bertmini.tokenization import BertTokenizer
    from bertmini import data

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    tokenizer = BertTokenizer.from_vocab(data.minilm_vocab_path())
    viz.masking_explorer(tokenizer, "the cat sat on the mat")
    assert isinstance(shown[0], viz.KernelNote), "the note must come first, above the widget"
    note = shown[0]._repr_html_()
    assert "Needs a running kernel" in note and viz.LAUNCH_LINKS in note and "static figure" in note
    assert "kernel" in repr(shown[0])


# --------------------------------------------------------------------------- masking figures


def _row(kinds):
    tokens = [f"t{i}" for i in range(len(kinds))]
    return {"original": tokens, "shown": tokens, "kinds": list(kinds)}


def _legend(rows):
    ax = viz.plot_masked_rows(rows)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(ax.figure)
    return labels


def test_the_legend_names_only_the_kinds_the_figure_shows():
    rows = [("a", _row(["special", "not selected", "[MASK]", "kept", "special"]))]
    assert _legend(rows) == ["not selected", "[MASK]", "kept"]


def test_a_random_replacement_in_any_row_puts_random_in_the_legend():
    rows = [("a", _row(["special", "[MASK]", "special"])),
            ("b", _row(["special", "random", "not selected", "special"]))]
    assert _legend(rows) == ["not selected", "[MASK]", "random"]


def test_masking_kinds_tells_mask_random_kept_and_unselected_apart():
    original, shown = [5, 6, 7, 8, 9], [5, 103, 42, 8, 9]
    labels = [-100, 6, 7, 8, -100]
    special = [True, False, False, False, False]
    kinds = viz.masking_kinds(original, shown, labels, mask_token_id=103,
                              special_tokens_mask=special)
    assert kinds == ["special", "[MASK]", "random", "kept", "not selected"]
