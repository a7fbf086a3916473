"""The book's own Sphinx extension: what a page needs comes from the book, never from a CDN.

* **bertviz's libraries.** ``static/bertviz/`` holds the three files bertviz's JavaScript asks
  require.js for, copied from the npm registry's packages: ``require.js`` (requirejs 2.3.6, MIT,
  licence in its header), ``d3.min.js`` (d3 5.7.0, BSD-3-Clause, ``LICENSE.d3.txt``) and
  ``jquery.min.js`` (jquery 3.7.1, MIT, ``LICENSE.jquery.txt``; bertviz names 2.0.0, which npm
  does not have, and uses nothing 3.x removed). They are copied to ``_static/bertviz/``, where
  :func:`bertmini.viz.head_view` and :func:`bertmini.viz.model_view` look for them on a book page.
  They are not in a top-level ``_static/`` folder because jupyter-book would load every ``.js``
  file there on every page, and require.js must not meet the theme's scripts.
* **MathJax** comes from the ``sphinx-mathjax-offline`` extension (MathJax 3, in ``_config.yml``).
* **ipywidgets.** ``nb_ipywidgets_js: {}`` in ``_config.yml`` keeps myst-nb from loading require.js
  and the widget manager from CDNs: a widget needs a kernel, and each explorer says so above itself
  (:func:`bertmini.viz.kernel_note`); the static figure after it is what the web page shows.
* **Kernel notes link to the launch buttons.** The placeholder of :data:`bertmini.viz.LAUNCH_LINKS`
  becomes links to the Colab and Binder buttons that sphinx-book-theme made for the page.
* **No script twice.** sphinx-thebe adds its inline configuration twice under jupyter-book, and the
  second copy throws a JavaScript error on every page (``THEBE_JS_URL`` already declared); a page
  keeps the first of identical scripts.
"""
from __future__ import annotations

import html
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
LAUNCH_LINKS = '<span class="bertmini-launch-links"></span>'   # = bertmini.viz.LAUNCH_LINKS


def add_static(app, config):
    config.html_static_path.append(str(STATIC))


def launch_urls(header_buttons) -> dict[str, str]:
    """``{"Colab": url, "Binder": url, ...}`` from sphinx-book-theme's header buttons of a page."""
    urls = {}
    for button in header_buttons or []:
        if button.get("label") == "launch-buttons":
            urls.update({b["text"]: b["url"] for b in button.get("buttons", []) if b.get("url")})
    return urls


def fill_launch_links(app, pagename, templatename, context, doctree):
    body = context.get("body", "")
    if LAUNCH_LINKS not in body:
        return
    urls = launch_urls(context.get("header_buttons"))
    links = " or ".join(f'<a class="reference external" href="{html.escape(url)}">{name}</a>'
                        for name, url in urls.items() if name in ("Colab", "Binder"))
    context["body"] = body.replace(LAUNCH_LINKS, f"; this page on {links}" if links else "")


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        # an inline script's filename is None or "", depending on who added it
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("config-inited", add_static)
    # after sphinx-book-theme's add_launch_buttons (priority 501)
    app.connect("html-page-context", fill_launch_links, priority=900)
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
