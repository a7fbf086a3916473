"""Run the chapters at another profile, with every training run cut short, and sort what breaks.

    .venv/bin/python tools/profile_smoke.py [--profile gpu] [--max-steps 200] [notebooks ...]

Issue 13: the ``gpu`` profile (bigger models, more data, more steps) had never run. A GPU is not
always at hand, so this runs each notebook on this machine with ``BERTMINI_PROFILE`` set and
``BERTMINI_MAX_STEPS`` capping every training run (``bertmini.train.step_cap``: an override, not a
code path of its own), in one throwaway cache, in book order, every cell even after an error.
Each error is then sorted:

* ``claim``: an ``AssertionError`` — a claim a few hundred steps need not satisfy (a model trained
  for 200 steps fills fewer blanks); expected, and listed so a reader can see which claims
  depend on training;
* ``follows``: a ``NameError`` after an earlier error in the same notebook (the earlier one is the
  cause);
* ``error``: anything else — a cell that does not run at that size (a shape, memory, a missing
  file). These are bugs; the exit status is 1 if there is one.

The report goes to ``_build/profile-smoke/<profile>.md`` (and ``.json``), each executed notebook
beside it (to read the values behind a claim that failed). Timings are the
machine's, not the profile's: a CPU runs the gpu sizes many times slower than a GPU would.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from claims import python_of  # noqa: E402  (magics blanked, line numbers kept)


def book_order() -> list[Path]:
    """The notebooks of ``_toc.yml``, in the book's order."""
    import yaml

    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for item in node:
                yield from files(item)

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"], *files(toc.get("parts", []))]
    return [ROOT / f"{f}.ipynb" for f in found if (ROOT / f"{f}.ipynb").exists()]


def sort_errors(nb) -> list[dict]:
    """One entry per cell that raised: its index, the exception, and its kind (see the module doc)."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") != "error":
                continue
            ename, evalue = out["ename"], out["evalue"]
            if ename == "AssertionError":
                kind = "claim"
            elif ename == "NameError" and found:
                kind = "follows"
            else:
                kind = "error"
            found.append({"cell": i, "kind": kind, "exception": f"{ename}: {evalue}"[:300],
                          "source": raising_statement(cell.source, out.get("traceback", []))[:120]})
    return found


def raising_statement(source: str, traceback: list[str]) -> str:
    """The first line of the cell's statement that raised, read from the traceback's
    ``Cell In[..], line N`` (the cell's last line if the traceback does not say)."""
    lines = source.splitlines() or [""]
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))
    where = re.search(r"Cell In\[\d+\], line (\d+)", text)
    if where is None:
        return lines[-1]
    line = int(where.group(1))
    try:
        for node in ast.parse(python_of(source)).body:
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return lines[node.lineno - 1].strip()
    except SyntaxError:
        pass
    return lines[min(line, len(lines)) - 1].strip()


def run(path: Path, env: dict, timeout: int) -> dict:
    nb = nbformat.read(path, as_version=4)
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits the environment of this process
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        crashed = None
    except Exception as e:  # a dead kernel or a cell over the time limit
        crashed = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        os.environ.clear()
        os.environ.update(old)
    errors = sort_errors(nb)
    saved = ROOT / "_build" / "profile-smoke" / path.name   # the executed notebook, to read the values
    saved.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, saved)
    if crashed:
        errors.append({"cell": None, "kind": "error", "exception": crashed, "source": ""})
    return {"notebook": str(path.relative_to(ROOT)), "seconds": round(time.perf_counter() - start, 1),
            "errors": errors}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of the book, in order")
    ap.add_argument("--profile", default="gpu", choices=["cpu", "gpu"])
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--amp", default=None, help="BERTMINI_AMP for the run (default: as the environment says)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds a cell may take")
    ap.add_argument("--cache", type=Path, default=None, help="default: a fresh temporary folder")
    args = ap.parse_args(argv)
    notebooks = [p.resolve() for p in args.notebooks] or book_order()
    cache = args.cache or Path(tempfile.mkdtemp(prefix=f"bertmini-smoke-{args.profile}-"))
    env = {"BERTMINI_PROFILE": args.profile, "BERTMINI_MAX_STEPS": str(args.max_steps),
           "BERTMINI_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if args.amp:
        env["BERTMINI_AMP"] = args.amp
    results = []
    for path in notebooks:
        print(f"== {path.relative_to(ROOT)} (profile {args.profile}, steps <= {args.max_steps})", flush=True)
        result = run(path, env, args.timeout)
        results.append(result)
        for e in result["errors"]:
            print(f"   {e['kind']:>8}  cell {e['cell']}: {e['exception'][:150]}", flush=True)
        print(f"   {result['seconds']:.0f} s", flush=True)
    out = ROOT / "_build" / "profile-smoke"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.profile}.json").write_text(json.dumps({"env": env, "results": results}, indent=1))
    lines = [f"# Chapters at the {args.profile} profile, training cut to {args.max_steps} steps", "",
             "| notebook | seconds | claims not met at the cut | errors |", "|---|---|---|---|"]
    for r in results:
        claims = "; ".join(f"cell {e['cell']}: {e['source']}" for e in r["errors"] if e["kind"] == "claim")
        errors = "; ".join(f"cell {e['cell']}: {e['exception']}" for e in r["errors"] if e["kind"] == "error")
        lines.append(f"| {r['notebook']} | {r['seconds']:.0f} | {claims or '-'} | {errors or '-'} |")
    (out / f"{args.profile}.md").write_text("\n".join(lines) + "\n")
    bad = [r["notebook"] for r in results if any(e["kind"] == "error" for e in r["errors"])]
    print(f"report: {out / (args.profile + '.md')}; notebooks with errors: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
