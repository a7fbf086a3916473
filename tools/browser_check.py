"""Load every page of the built book in headless Chromium, with the network cut off, and check it.

Pages are opened from disk (``file://``), as a reader opens ``_build/html/index.html``, in one
Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no extra
package). The network is cut three ways: every host name resolves to nothing, every proxied
request goes to a closed port, and DevTools puts the page offline. A page fails when

* it asks for anything that is not a file of the book (every request it makes is logged), or a
  file of the book that is not there, or throws a JavaScript error;
* it has formulas and MathJax did not typeset every one (MathJax 3's ``mjx-container`` elements),
  or raw TeX (``$...$``, ``\\(...\\)``) is left in its text;
* a bertviz view on it drew no SVG, or a cell calls ``head_view``/``model_view`` and shows no view,
  or an ipywidgets explorer does not say that it needs a running kernel;
* it is a notebook and its launch buttons (Colab, Binder) do not point at that notebook on the
  repository named in ``_config.yml``, or a "needs a running kernel" note lacks those links;
* Chromium cannot render it (no article body or title, no screenshot), its code draws figures that
  the page does not show, it shows a Python traceback, a link between pages or to a local asset
  points at a file that is not there, or an in-page anchor is missing.

Screenshots go to ``_build/screenshots/``.
Usage: python tools/browser_check.py [_build/html [PAGE ...]] (pages relative to the book, e.g.
chapters/03_attention.html; all of them by default).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
    # the network, cut: no name resolves, and anything proxied goes to a closed local port
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
]
SKIP_BODY_CHECKS = {"genindex.html", "search.html"}   # Sphinx's own pages: no article to check
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
WIDTH, MAX_SHOT_HEIGHT = 1280, 4800
REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.I)
VIEW_CALL = re.compile(r"\b(head_view|model_view)\(")
EXPLORER_CALL = re.compile(r"\b\w+_explorer\(")   # viz's explorers, whether or not their state was saved
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|(?<![\w$\\])\$[^$\s][^$\n]{0,200}?(?<!\s)\$(?![\w$])")

# Runs in the page once it has loaded: what it shows, as JSON.
INSPECT_JS = r"""
(() => {
  const article = document.querySelector("article.bd-article") || document.body;
  const prose = article.cloneNode(true);
  prose.querySelectorAll("pre, code, .highlight, .cell_output, mjx-container, script, style, .bertviz")
       .forEach(e => e.remove());
  const views = [...document.querySelectorAll("div[id^='bertviz-']")].map(d => ({
    id: d.id, shapes: d.querySelectorAll("svg rect, svg text, svg line, svg path").length,
    svg: d.querySelectorAll("svg").length}));
  // An explorer is a widget with a control in it (a slider, a text box...); a progress bar is not.
  const saved = document.querySelector("script[type='application/vnd.jupyter.widget-state+json']");
  const state = saved ? (JSON.parse(saved.textContent).state || {}) : {};
  const passive = /^(H|V)?BoxModel$|^(HTML|HTMLMath|Label|FloatProgress|IntProgress|Layout|Output)Model$|StyleModel$/;
  const interactive = (id, seen) => {
    const m = state[id];
    if (!m || seen.has(id)) return false;
    seen.add(id);
    return !passive.test(m.model_name) || ((m.state || {}).children || [])
        .some(k => interactive(String(k).replace("IPY_MODEL_", ""), seen));
  };
  const cells = [...document.querySelectorAll("div.cell")].map(c => ({
    input: (c.querySelector(".cell_input") || {innerText: ""}).innerText,
    removed: c.classList.contains("tag_remove-output") || c.classList.contains("tag_remove-cell"),
    views: c.querySelectorAll("div[id^='bertviz-']").length,
    explorers: [...c.querySelectorAll("script[type='application/vnd.jupyter.widget-view+json']")]
        .filter(v => interactive(JSON.parse(v.textContent).model_id, new Set())).length,
    notes: c.querySelectorAll(".bertmini-kernel-note").length}));
  const links = [...document.querySelectorAll("a[href]")].map(a => a.href);
  const notes = [...document.querySelectorAll(".bertmini-kernel-note")].map(n => ({
    html: n.innerHTML, links: [...n.querySelectorAll("a[href]")].map(a => a.href)}));
  return JSON.stringify({
    hasArticle: !!document.querySelector(".bd-article"), hasTitle: !!document.querySelector("h1"),
    math: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll("mjx-container").length,
    mathjaxErrors: document.querySelectorAll("mjx-merror, .MathJax_Error").length,
    text: prose.innerText, views, cells, links, notes,
    traceback: !!document.querySelector(".output.traceback, .cell_output .ansi-red-fg"),
    height: Math.min(document.documentElement.scrollHeight, MAX_HEIGHT)});
})()
""".replace("MAX_HEIGHT", str(MAX_SHOT_HEIGHT))

# Waits for MathJax's first typesetting pass and for the bertviz views to draw (or time out).
SETTLE_JS = r"""
(async () => {
  const until = Date.now() + 15000;
  const pause = ms => new Promise(r => setTimeout(r, ms));
  while (window.MathJax && !(MathJax.startup && MathJax.startup.promise) && Date.now() < until)
    await pause(50);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise)
    await Promise.race([MathJax.startup.promise, pause(Math.max(0, until - Date.now()))]);
  const drawn = () => [...document.querySelectorAll("div[id^='bertviz-']")]
      .every(d => d.querySelector("svg"));
  while (!drawn() && Date.now() < until) await pause(50);
  await pause(200);   // let the last redraws settle before the screenshot
  return true;
})()
"""


class Chromium:
    """Headless Chromium, driven over the DevTools protocol on a pipe (JSON messages ending in NUL)."""

    def __init__(self, exe: str, profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():   # Chromium reads commands on fd 3 and writes answers on fd 4
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it crash?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            try:
                self.events.append(self._read_message(deadline))
            except TimeoutError:
                return False
        return True

    def evaluate(self, session: str, expression: str, timeout: float = 30):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("text", "exception"))
        return result["result"].get("value")

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


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
            continue  # an outgoing link: the browser check below sees whether a page *loads* it
        target = page if not u.path else (page.parent / unquote(u.path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"{page.relative_to(root)}: missing {ref}")
        elif u.fragment and target.suffix == ".html" and u.fragment not in parse(target).ids:
            problems.append(f"{page.relative_to(root)}: no anchor #{u.fragment} in {target.name}")
    return problems


def expected_launch_urls(config_path: Path, notebook: str) -> dict[str, str]:
    """The Colab and Binder addresses of ``notebook`` (a path in the repository), from ``_config.yml``."""
    config = yaml.safe_load(config_path.read_text())
    repo = config["repository"]
    url, branch = repo["url"].rstrip("/"), repo.get("branch", "main")
    path = (repo.get("path_to_book") or "").strip("/")
    path = f"{path}/{notebook}" if path else notebook
    org_repo = urlsplit(url).path.strip("/")
    launch = config.get("launch_buttons", {})
    ui = "tree" if launch.get("notebook_interface", "classic") == "classic" else "lab/tree"
    urls = {}
    if launch.get("colab_url"):
        urls["Colab"] = f"{launch['colab_url'].rstrip('/')}/github/{org_repo}/blob/{branch}/{path}"
    if launch.get("binderhub_url"):
        urls["Binder"] = f"{launch['binderhub_url'].rstrip('/')}/v2/gh/{org_repo}/{branch}?urlpath={ui}/{path}"
    return urls


def check_shown(rel: str, shown: dict, html: str, launch: dict[str, str] | None) -> list[str]:
    """What the loaded page shows: math, bertviz views, launch buttons, kernel notes, body."""
    problems = []
    if shown["math"]:
        if shown["typeset"] < shown["math"] or shown["mathjaxErrors"]:
            problems.append(f"{rel}: {shown['math']} formulas, {shown['typeset']} typeset by MathJax, "
                            f"{shown['mathjaxErrors']} with TeX errors")
        raw = RAW_TEX.findall(shown["text"])
        if raw:
            problems.append(f"{rel}: raw TeX left in the text: {raw[:3]}")
    for view in shown["views"]:
        if not view["svg"] or view["shapes"] < 3:
            problems.append(f"{rel}: the bertviz view {view['id']} drew nothing (no SVG)")
    for cell in shown["cells"]:
        if VIEW_CALL.search(cell["input"]) and not cell["removed"] and not cell["views"]:
            problems.append(f"{rel}: a cell calls {VIEW_CALL.search(cell['input']).group(1)} "
                            "but shows no view")
        explorer = cell.get("explorers") or EXPLORER_CALL.search(cell["input"])
        if explorer and not cell["removed"] and not cell.get("notes"):
            problems.append(f"{rel}: an ipywidgets explorer without a 'needs a running kernel' note "
                            "(display bertmini.viz.kernel_note() above the widget)")
    if launch is not None:
        for name, url in launch.items():
            if url not in shown["links"]:
                problems.append(f"{rel}: no {name} launch button pointing at {url}")
    for note in shown["notes"]:
        if "bertmini-launch-links" in note["html"] or (launch and not set(launch.values()) <= set(note["links"])):
            problems.append(f"{rel}: a 'needs a running kernel' note without the page's launch links")
    if rel not in SKIP_BODY_CHECKS:
        if not shown["hasArticle"] or not shown["hasTitle"]:
            problems.append(f"{rel}: the rendered page has no article body or title")
        text = re.sub(r"<[^>]+>", "", html)  # code is split into highlighted spans
        if ("plt.show()" in text or "plt.subplots" in text) and "_images/" not in html:
            problems.append(f"{rel}: its code draws figures but the page shows none "
                            "(was the notebook run with a non-inline matplotlib backend?)")
        if shown["traceback"] or ("ename" in html and "Traceback" in html):
            problems.append(f"{rel}: shows a Python traceback")
    return problems


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("Chromium is not installed: `apt-get install chromium` (make test does this).")


def visit(browser: Chromium, session: str, page: Path, png: Path) -> tuple[dict, list[str], list[str]]:
    """Load one page; return what it shows, the requests that left the book, and other failures."""
    browser.events.clear()
    browser.send("Page.navigate", {"url": page.as_uri()}, session)
    if not browser.wait_for("Page.loadEventFired", 60):
        return {}, [], ["the page did not finish loading in 60 s"]
    browser.evaluate(session, SETTLE_JS, timeout=60)
    shown = json.loads(browser.evaluate(session, INSPECT_JS))
    shot = browser.send("Page.captureScreenshot", {   # the viewport is as tall as a screenshot
        "format": "png", "captureBeyondViewport": False,
        "clip": {"x": 0, "y": 0, "width": WIDTH, "height": max(shown["height"], 600), "scale": 1}}, session)
    png.write_bytes(base64.b64decode(shot["data"]))
    outside, failures = [], []
    sent = {}
    for e in browser.events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            sent[params["requestId"]] = url
            if not url.startswith(LOCAL_SCHEMES):
                outside.append(url)
        elif method == "Network.loadingFailed" and sent.get(params["requestId"], "").startswith("file:"):
            failures.append(f"cannot load {sent[params['requestId']]} ({params.get('errorText')})")
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            failures.append("JavaScript error: " + (d.get("exception", {}).get("description") or d.get("text", ""))
                            .splitlines()[0])
    return shown, outside, failures


def main(root="_build/html", *only: str) -> int:
    root = Path(root).resolve()
    if not (root / "index.html").exists():
        print(f"no built book in {root}: run `make book` first")
        return 1
    book = root.parent.parent
    config = book / "_config.yml"
    shots = root.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    pages = sorted(p for p in root.rglob("*.html")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
                   and (not only or p.relative_to(root).as_posix() in only))
    problems, started = [], time.monotonic()
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(chromium(), profile)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                browser.send(f"{domain}.enable", session=session)
            browser.send("Network.emulateNetworkConditions", {
                "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}, session)
            browser.send("Emulation.setDeviceMetricsOverride", {
                "width": WIDTH, "height": MAX_SHOT_HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session)
            for page in pages:
                rel = page.relative_to(root).as_posix()
                redirect = REDIRECT.search(page.read_text(encoding="utf-8", errors="replace"))
                if redirect:   # Sphinx's index.html only forwards to the first chapter
                    ok = (page.parent / redirect.group(1)).is_file()
                    problems += [] if ok else [f"{rel}: redirects to a missing {redirect.group(1)}"]
                    print(f"{'ok ' if ok else 'BAD'} {rel}: redirects to {redirect.group(1)}")
                    continue
                found = broken_links(root, page)
                png = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                shown, outside, failures = visit(browser, session, page, png)
                found += [f"{rel}: requested {url}, outside the book" for url in sorted(set(outside))]
                found += [f"{rel}: {f}" for f in failures]
                if shown:
                    notebook = rel.removesuffix(".html") + ".ipynb"
                    launch = expected_launch_urls(config, notebook) if (book / notebook).exists() else None
                    html = page.read_text(encoding="utf-8", errors="replace")
                    found += check_shown(rel, shown, html, launch)
                if not png.exists() or png.stat().st_size < 5_000:
                    found.append(f"{rel}: no screenshot (Chromium did not render it)")
                size = page.stat().st_size / 1e3
                detail = (f"{shown.get('typeset', 0)}/{shown.get('math', 0)} formulas typeset, "
                          f"{len(shown.get('views', []))} bertviz views, {size:.0f} kB")
                print(f"{'ok ' if not found else 'BAD'} {rel}: {detail}")
                problems += found
        finally:
            browser.close()
    for p in problems:
        print("PROBLEM", p)
    print(f"browser check: {len(pages)} pages offline in {time.monotonic() - started:.0f} s, "
          f"{len(problems)} problems, screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
