"""The web book works without the internet (issue 21): its extension and its browser check.

The whole book is checked by ``tools/browser_check.py`` at the end of ``make test``; these tests
check its parts on small inputs: the launch addresses it expects, what it calls a problem, the
book extension's launch links, and a bertviz view drawn offline from the book's own libraries.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from bertmini import viz

ROOT = Path(__file__).resolve().parent.parent


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check = load("browser_check", ROOT / "tools" / "browser_check.py")
book = load("bertmini_book", ROOT / "_ext" / "bertmini_book.py")


def test_launch_addresses_come_from_the_config():
    urls = check.expected_launch_urls(ROOT / "_config.yml", "chapters/03_attention.ipynb")
    assert urls == {
        "Colab": "https://colab.research.google.com/github/bertmini/bertmini/blob/main/chapters/03_attention.ipynb",
        "Binder": "https://mybinder.org/v2/gh/bertmini/bertmini/main?urlpath=tree/chapters/03_attention.ipynb",
    }
    appendix = check.expected_launch_urls(ROOT / "_config.yml", "appendix/solutions_03.ipynb")
    assert appendix["Colab"].endswith("/blob/main/appendix/solutions_03.ipynb")


def test_the_extension_and_the_package_share_the_placeholder():
    assert book.LAUNCH_LINKS == viz.LAUNCH_LINKS
    assert viz.LAUNCH_LINKS in viz.kernel_note()._repr_html_()


def test_kernel_notes_get_the_pages_launch_links():
    buttons = [{"label": "download-buttons", "buttons": []},
               {"label": "launch-buttons", "buttons": [
                   {"text": "Binder", "url": "https://mybinder.org/x?urlpath=tree/a.ipynb"},
                   {"text": "Colab", "url": "https://colab.research.google.com/github/o/r/blob/main/a.ipynb"}]}]
    context = {"body": f"<p>before</p>{viz.kernel_note()._repr_html_()}", "header_buttons": buttons}
    book.fill_launch_links(None, "a", "page.html", context, None)
    assert viz.LAUNCH_LINKS not in context["body"]
    assert 'href="https://mybinder.org/x?urlpath=tree/a.ipynb">Binder</a>' in context["body"]
    assert 'href="https://colab.research.google.com/github/o/r/blob/main/a.ipynb">Colab</a>' in context["body"]
    plain = {"body": "<p>no note here</p>", "header_buttons": buttons}
    book.fill_launch_links(None, "b", "page.html", plain, None)
    assert plain["body"] == "<p>no note here</p>"


def test_a_script_added_twice_is_kept_once():
    from sphinx.builders.html._assets import _JavaScript

    thebe = _JavaScript(None, body="const THEBE_JS_URL = 1")
    context = {"script_files": [_JavaScript("a.js"), thebe, _JavaScript("b.js"),
                                _JavaScript("", body="const THEBE_JS_URL = 1")]}
    book.drop_repeated_scripts(None, "a", "page.html", context, None)
    assert [str(s) for s in context["script_files"]] == [str(_JavaScript("a.js")), str(thebe),
                                                        str(_JavaScript("b.js"))]


@pytest.mark.parametrize("text, raw", [
    ("the weights $w_i$ are learned", True), (r"scaled by \(1/\sqrt{d_k}\)", True),
    ("$$x^2$$", True), ("it costs $5 and $10 a month", False), ("plain prose", False),
])
def test_raw_tex_is_spotted(text, raw):
    assert bool(check.RAW_TEX.search(text)) == raw


def shown(**changes):
    page = {"hasArticle": True, "hasTitle": True, "math": 2, "typeset": 2, "mathjaxErrors": 0,
            "text": "prose", "views": [], "cells": [], "links": [], "notes": [], "traceback": False}
    return {**page, **changes}


def test_what_the_check_calls_a_problem():
    launch = {"Colab": "https://c/x.ipynb", "Binder": "https://b/x.ipynb"}
    ok = shown(links=list(launch.values()))
    assert check.check_shown("x.html", ok, "<h1>x</h1>", launch) == []
    cases = {
        "typeset by MathJax": shown(typeset=1, links=list(launch.values())),
        "raw TeX": shown(text="where $q_i$ is", links=list(launch.values())),
        "drew nothing": shown(views=[{"id": "bertviz-1", "svg": 0, "shapes": 0}], links=list(launch.values())),
        "shows no view": shown(cells=[{"input": "viz.head_view(a, t)", "removed": False, "views": 0}],
                               links=list(launch.values())),
        "no Binder launch button": shown(links=[launch["Colab"]]),
        "launch links": shown(links=list(launch.values()), notes=[{"html": viz.LAUNCH_LINKS, "links": []}]),
        "needs a running kernel": shown(cells=[{"input": "explore()", "removed": False, "views": 0,
                                                "explorers": 1, "notes": 0}], links=list(launch.values())),
    }
    for expected, page in cases.items():
        problems = check.check_shown("x.html", page, "<h1>x</h1>", launch)
        assert len(problems) == 1 and expected in problems[0], (expected, problems)
    hidden = shown(cells=[{"input": "viz.head_view(a, t)", "removed": True, "views": 0}])
    assert check.check_shown("x.html", hidden, "", None) == []   # remove-output: nothing to draw
    unsaved = shown(cells=[{"input": "box = viz.masking_explorer(tok, s)", "removed": False, "views": 0,
                            "explorers": 0, "notes": 0}])         # no widget state saved: its name says
    assert "needs a running kernel" in check.check_shown("x.html", unsaved, "", None)[0]
    progress = shown(cells=[{"input": "train(model)", "removed": False, "views": 0, "explorers": 0, "notes": 0}])
    assert check.check_shown("x.html", progress, "", None) == []    # a progress bar is no explorer


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (make test installs it)")
def test_a_view_draws_offline_from_the_books_libraries(tmp_path):
    """A page laid out like the built book's: the views draw with the network cut off."""
    shutil.copytree(ROOT / "_ext" / "static" / "bertviz", tmp_path / "_static" / "bertviz")
    g = torch.Generator().manual_seed(0)
    att = tuple(torch.randn(1, 2, 5, 5, generator=g).softmax(-1) for _ in range(2))
    tokens = ["[CLS]", "a", "[SEP]", "b", "[SEP]"]
    body = viz.head_view(att, tokens, sentence_b_start=3).html + viz.model_view(att, tokens).html
    page = tmp_path / "chapters" / "page.html"
    page.parent.mkdir()
    page.write_text('<!DOCTYPE html><html data-content_root="../"><head><title>t</title></head>'
                    f'<body><article class="bd-article"><h1>t</h1>{body}</article></body></html>')
    with tempfile.TemporaryDirectory() as profile:
        browser = check.Chromium(check.chromium(), profile)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                browser.send(f"{domain}.enable", session=session)
            result, outside, failures = check.visit(browser, session, page, tmp_path / "shot.png")
        finally:
            browser.close()
    assert outside == [] and failures == []
    assert len(result["views"]) == 2 and all(v["svg"] and v["shapes"] > 10 for v in result["views"])
    assert all(url.startswith("file:") for e in browser.events if e.get("method") == "Network.requestWillBeSent"
               for url in [e["params"]["request"]["url"]])
