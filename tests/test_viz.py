"""bertmini.viz: the masking figures say only what they show (issue 15)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bertmini import viz  # noqa: E402


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
