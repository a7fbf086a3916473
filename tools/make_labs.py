"""Write the student version of every workshop lab: each solution replaced by a NotImplementedError.

The instructor's labs (``labs/NN_*.ipynb``) hold the solution code between nbgrader's markers,
inside the body of the function the learner writes, with a hint for the student:

    def wordpiece(word, vocab):
        ### BEGIN SOLUTION
        ### HINT: from start = 0, try the longest piece first, ...
        ...the solution...
        ### END SOLUTION

The student version keeps everything else and puts ``raise NotImplementedError("<the hint>")`` where
the block was, at its indentation, so the notebook runs until the first check calls the function.
Outputs are cleared, the solution cells unfolded (the book folds them with ``hide-input``), and the
cells tagged ``remove-input`` left out: they check the page's claims against the instructor's
solutions, and the book hides them already.
A block outside a function, without a ``### HINT:`` line, or not closed is an error naming the
notebook, the cell and the line.

Usage: ``python tools/make_labs.py [--out _build/labs] [labs/01_wordpiece.ipynb ...]``
(default: every ``labs/*.ipynb``). ``make labs`` runs it. With ``--nbgrader`` the solutions stay and
only the hidden checks go: a source folder for ``nbgrader generate_assignment``, which writes its own
stubs from the same markers.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END, HINT = "### BEGIN SOLUTION", "### END SOLUTION", "### HINT:"
WIDTH = 80  # the generated lines fit the page, as the labs' own lines do


class LabSourceError(ValueError):
    """A solution block that cannot be turned into a student stub; the message says where and why."""


def solution_blocks(source: str, where: str) -> list[dict]:
    """The solution blocks of one cell: ``first`` and ``last`` line index (the markers), ``indent``, ``hint``."""
    blocks, block = [], None
    for n, line in enumerate(source.splitlines()):
        marker = line.strip()
        at = f"{where}, line {n + 1}"
        if marker == BEGIN:
            if block is not None:
                raise LabSourceError(f"{at}: {BEGIN} inside another solution block; close the first with {END}")
            indent = line[: len(line) - len(line.lstrip())]
            if not indent:
                raise LabSourceError(f"{at}: a solution block must sit inside a function body (indented), so that "
                                     "the student notebook runs up to the check that calls the function")
            block = {"first": n, "indent": indent, "hint": []}
        elif marker == END:
            if block is None:
                raise LabSourceError(f"{at}: {END} without a {BEGIN} before it")
            if not block["hint"]:
                raise LabSourceError(f"{at}: the solution block has no `{HINT} ...` line; the student's "
                                     "NotImplementedError shows it")
            blocks.append({**block, "last": n, "hint": " ".join(block["hint"])})
            block = None
        elif block is not None and marker.startswith(HINT):
            block["hint"].append(marker[len(HINT):].strip())
    if block is not None:
        raise LabSourceError(f"{where}, line {block['first'] + 1}: {BEGIN} is never closed with {END}")
    return blocks


def stub(indent: str, hint: str) -> list[str]:
    """``raise NotImplementedError("hint")``, the hint split over lines that fit the page."""
    body = indent + " " * 4
    chunks = textwrap.wrap(hint, WIDTH - len(body) - 3, break_long_words=False, break_on_hyphens=False)
    literals = [json.dumps(c + (" " if k < len(chunks) - 1 else ""), ensure_ascii=False)
                for k, c in enumerate(chunks)]
    return [f"{indent}raise NotImplementedError(", *(body + s for s in literals[:-1]), f"{body}{literals[-1]})"]


def function_name(lines: list[str], first: int) -> str:
    """The name of the function whose body holds line ``first`` ("this function" if none is found)."""
    indent = len(lines[first]) - len(lines[first].lstrip())
    for line in reversed(lines[:first]):
        match = re.match(r"\s*def (\w+)\(", line)
        if match and len(line) - len(line.lstrip()) < indent:
            return match.group(1)
    return "this function"


def student_source(source: str, where: str) -> str:
    """The cell's code with each solution block replaced by its stub."""
    lines = source.splitlines()
    for block in reversed(solution_blocks(source, where)):
        hint = block["hint"][:1].upper() + block["hint"][1:]
        message = f"{function_name(lines, block['first'])} is yours to write. {hint}"
        lines[block["first"]:block["last"] + 1] = stub(block["indent"], message)
    return "\n".join(lines)


def student_notebook(nb, name: str = "lab", solutions: bool = False):
    """A copy of the instructor's notebook for students: stubs for solutions, no outputs, no hidden checks.
    ``solutions=True`` keeps the solutions (a source for nbgrader, which makes its own stubs)."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if "remove-input" not in c.metadata.get("tags", [])]
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        new = cell.source if solutions else student_source(cell.source, f"{name}, cell {i}")
        if new != cell.source:
            cell.source = new
            tags = [t for t in cell.metadata.get("tags", []) if t != "hide-input"]
            cell.metadata["tags"] = tags
            if not tags:
                del cell.metadata["tags"]
        cell.outputs, cell.execution_count = [], None
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("labs", nargs="*", type=Path, help="instructor labs (default: labs/*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "labs", help="where the student labs go")
    parser.add_argument("--nbgrader", action="store_true",
                        help="keep the solutions, drop only the book's hidden checks: a source folder for nbgrader")
    args = parser.parse_args(argv)
    paths = args.labs or sorted((ROOT / "labs").glob("*.ipynb"))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        try:
            nb = student_notebook(nbformat.read(path, as_version=4), path.name, solutions=args.nbgrader)
        except LabSourceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        nbformat.write(nb, args.out / path.name)
        print(f"{path.name}: {'nbgrader source' if args.nbgrader else 'student version'} in {args.out / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
