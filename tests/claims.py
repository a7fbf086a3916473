"""A chapter's claims, read from its notebook: the top-level ``assert`` statements of its code
cells, the names each reads, and their evaluation on recorded values (tests/test_claims.py,
tools/claim_fixture.py)."""
from __future__ import annotations

import ast
import builtins
import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "claims"


@dataclass
class Claim:
    cell: int          # index among the notebook's code cells
    source: str        # the assert statement as written
    node: ast.Assert


def python_of(cell_source: str) -> str:
    # IPython magics and shell lines are not Python: blank them, keeping line numbers.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines())


def top_level_asserts(nb) -> list[Claim]:
    """Every ``assert`` at the top level of a code cell (not inside a function or a loop, whose
    names depend on a call or an iteration), in order."""
    claims = []
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code_cells):
        source = python_of(cell.source)
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assert):
                claims.append(Claim(i, ast.get_source_segment(source, node), node))
    return claims


def assert_names(claim: Claim) -> set[str]:
    """The global names the assert's condition reads (builtins left out)."""
    bound = {n.arg for n in ast.walk(claim.node.test) if isinstance(n, ast.arg)}  # lambda arguments
    for comp in ast.walk(claim.node.test):  # comprehension variables
        if isinstance(comp, ast.comprehension):
            bound |= {n.id for n in ast.walk(comp.target) if isinstance(n, ast.Name)}
    names = {n.id for n in ast.walk(claim.node.test) if isinstance(n, ast.Name)}
    return names - bound - set(dir(builtins))


def _value(v):
    if isinstance(v, dict):
        if set(v) == {"__set__"}:
            return {_value(x) for x in v["__set__"]}
        if set(v) == {"__tuple__"}:
            return tuple(_value(x) for x in v["__tuple__"])
        return {k: _value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def load_fixture(path: Path) -> dict:
    """``{"cells": {index: {"values": ..., "opaque": [...]}}, "path": ..., ...}``: per code cell
    with asserts, the values its asserts read right after it ran."""
    record = json.loads(path.read_text())
    for cell in record["cells"].values():
        cell["values"] = {k: _value(v) for k, v in cell["values"].items()}
    return record


def evaluate(claim: Claim, values: dict) -> bool:
    expression = ast.Expression(claim.node.test)
    # The values are globals, so that comprehensions and generator expressions see them too.
    return bool(eval(compile(expression, "<claim>", "eval"), {"__builtins__": builtins, **values}))


def read_notebook(name: str):
    matches = sorted(ROOT.glob(f"*/{name}"))
    if len(matches) != 1:
        raise FileNotFoundError(f"notebook {name!r}: found {matches}")
    return nbformat.read(matches[0], as_version=4)
