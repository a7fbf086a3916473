"""Load every page of the built book in headless Chromium and check it.

A page fails when Chromium cannot render it (no screenshot, or the rendered DOM
has no article body), when its code draws figures that the page does not show,
when a link between pages or to a local asset points at a file that is not
there, or when an in-page anchor is missing. Screenshots go to
_build/screenshots/. Usage: python tools/browser_check.py [_build/html]
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=4000",
]
SKIP_PAGES = {"genindex.html", "search.html"}


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key) and not (tag == "link" and a.get("rel") in ("preconnect", "dns-prefetch")):
                self.refs.append(a[key])


def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p


def broken_links(root: Path, page: Path) -> list[str]:
    problems = []
    for ref in parse(page).refs:
        u = urlsplit(ref)
        if u.scheme or ref.startswith(("//", "mailto:", "javascript:", "data:")):
            continue  # external: the reader's browser fetches it, not our build
        target = page if not u.path else (page.parent / unquote(u.path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"{page.relative_to(root)}: missing {ref}")
        elif u.fragment and target.suffix == ".html" and u.fragment not in parse(target).ids:
            problems.append(f"{page.relative_to(root)}: no anchor #{u.fragment} in {target.name}")
    return problems


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("Chromium is not installed: `apt-get install chromium` (make test does this).")


def main(root="_build/html") -> int:
    root = Path(root).resolve()
    if not (root / "index.html").exists():
        print(f"no built book in {root}: run `make book` first")
        return 1
    shots = root.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pages = sorted(p for p in root.rglob("*.html")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
                   and p.name not in SKIP_PAGES)
    problems = []
    exe = chromium()
    for page in pages:
        rel = page.relative_to(root).as_posix()
        problems += broken_links(root, page)
        png = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
        with tempfile.TemporaryDirectory() as profile:
            common = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
            dom = subprocess.run(common + ["--dump-dom", f"{base}/{rel}"], capture_output=True,
                                 text=True, timeout=120).stdout
            subprocess.run(common + ["--window-size=1280,4800", f"--screenshot={png}",
                                     f"{base}/{rel}"], capture_output=True, timeout=120)
        if "bd-article" not in dom or "<h1" not in dom:
            problems.append(f"{rel}: the rendered page has no article body or title")
        html = page.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"<[^>]+>", "", html)  # code is split into highlighted spans
        if ("plt.show()" in text or "plt.subplots" in text) and "_images/" not in html:
            problems.append(f"{rel}: its code draws figures but the page shows none "
                            "(was the notebook run with a non-inline matplotlib backend?)")
        if 'class="output traceback' in dom or ("ename" in dom and "Traceback" in dom):
            problems.append(f"{rel}: shows a Python traceback")
        if not png.exists() or png.stat().st_size < 5_000:
            problems.append(f"{rel}: no screenshot (Chromium did not render it)")
        print(f"{'ok ' if not any(p.startswith(rel) for p in problems) else 'BAD'} {rel}")
    server.shutdown()
    for p in problems:
        print("PROBLEM", p)
    print(f"browser check: {len(pages)} pages, {len(problems)} problems, screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
