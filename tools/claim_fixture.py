"""Record what a chapter's claims were checked on, for tests/test_claims.py.

    .venv/bin/python tools/claim_fixture.py chapters/04_pretraining.ipynb

runs the notebook (with the environment it is given: BERTMINI_AMP, BERTMINI_CACHE, ...),
and right after each code cell with top-level ``assert`` statements saves, in the same kernel,
the value of every name those asserts read (a name a later cell binds again is recorded as the
assert saw it), as JSON, in ``tests/fixtures/claims/<notebook>.<path>.json``
(``path``: the numeric path the run trained on, fp32, bf16 or fp16). Values that JSON
cannot hold (tensors with more than one number, models, functions) or that would take more than
``MAX_CHARS`` characters (a data set, say) are listed as
``opaque``: the asserts that read them are about code, not about a trajectory, and the
test leaves them out. The test then evaluates the notebook's *current* asserts on these
values, so a claim tightened on one numeric path is caught on the others without training.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from claims import FIXTURES, assert_names, top_level_asserts  # noqa: E402

MAX_CHARS = 4000

DUMP = r'''
import json as _json, math as _math
def _plain(v, depth=0):
    import numbers
    if depth > 6:
        raise TypeError
    if v is None or type(v) in (bool, str):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    if hasattr(v, "numel") and hasattr(v, "item") and v.numel() == 1:
        return v.item()
    if isinstance(v, (set, frozenset)):
        return {"__set__": sorted((_plain(x, depth + 1) for x in v), key=repr)}
    if type(v) is tuple:  # exactly: a named tuple or a dataclass is opaque
        return {"__tuple__": [_plain(x, depth + 1) for x in v]}
    if type(v) is list:
        return [_plain(x, depth + 1) for x in v]
    if type(v) is dict and all(isinstance(k, str) for k in v):
        return {k: _plain(x, depth + 1) for k, x in v.items()}
    raise TypeError(type(v).__name__)
_values, _opaque = {}, []
for _n in _NAMES:
    if _n not in globals():
        continue
    try:
        _v = _plain(globals()[_n])
        if len(_json.dumps(_v)) > MAX_CHARS:  # a data set, not a number: the fixture stays small
            raise TypeError
        _values[_n] = _v
    except TypeError:
        _opaque.append(_n)
from bertmini.train import numeric_path as _np
from bertmini import runtime as _rt
with open(_OUT, "a") as _f:
    _f.write(_json.dumps({"cell": _CELL, "values": _values, "opaque": sorted(_opaque), "path": _np(),
                          "profile": _rt.profile()}) + "\n")
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per cell")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    claims = top_level_asserts(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "values.jsonl"
        run = nbformat.v4.new_notebook(metadata=nb.metadata)
        for i, cell in enumerate(code_cells):
            run.cells.append(cell)
            names = sorted(set().union(set(), *(assert_names(a) for a in claims if a.cell == i)))
            if names:
                run.cells.append(nbformat.v4.new_code_cell(
                    f"_NAMES, _OUT, _CELL, MAX_CHARS = {names!r}, {str(out)!r}, {i}, {MAX_CHARS}\n" + DUMP))
        NotebookClient(run, timeout=args.timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(args.notebook.resolve().parent)}}).execute()
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    record = {"cells": {str(r["cell"]): {"values": r["values"], "opaque": r["opaque"]} for r in rows},
              "path": rows[0]["path"], "profile": rows[0]["profile"]}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    record.update(notebook=args.notebook.name, commit=commit.stdout.strip(),
                  asserts=[a.source for a in claims])
    FIXTURES.mkdir(parents=True, exist_ok=True)
    target = FIXTURES / f"{args.notebook.stem}.{record['path']}.json"
    target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    opaque = sorted({n for c in record["cells"].values() for n in c["opaque"]})
    print(f"{target}: {len(record['cells'])} cells recorded, opaque: {opaque}")


if __name__ == "__main__":
    main()
