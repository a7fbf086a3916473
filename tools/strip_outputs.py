"""Strip outputs and execution counts from notebooks and set the python3 kernelspec.

Usage: python tools/strip_outputs.py chapters appendix   (files or directories)
`--check` only reports notebooks that would change (exit 1 if any).
"""
import sys
from pathlib import Path

import nbformat

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def clean(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.pop("widgets", None)
    return nb


def main(args):
    check = "--check" in args
    paths = []
    for a in (a for a in args if a != "--check"):
        p = Path(a)
        paths += sorted(p.rglob("*.ipynb")) if p.is_dir() else [p]
    changed = []
    for p in paths:
        if ".ipynb_checkpoints" in p.parts:
            continue
        before = p.read_text(encoding="utf-8")
        after = nbformat.writes(clean(nbformat.reads(before, as_version=4))) + "\n"
        if after != before:
            changed.append(p)
            if not check:
                p.write_text(after, encoding="utf-8")
    for p in changed:
        print(("would strip " if check else "stripped ") + str(p))
    return 1 if (check and changed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
