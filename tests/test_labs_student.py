"""The student labs (tools/make_labs.py, `make labs`): made from the instructor's labs, no line of a solution
survives in them, and each one, executed, stops at its first check with the NotImplementedError that carries
its hint, and nothing else."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted((ROOT / "labs").glob("*.ipynb"))


def _tool():
    spec = importlib.util.spec_from_file_location("make_labs", ROOT / "tools" / "make_labs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_labs = _tool()


def blocks_of(nb):
    """(cell index, block) for every solution block of a notebook, in order."""
    return [(i, b) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for b in make_labs.solution_blocks(c.source, f"cell {i}")]


def solution_only_lines(nb) -> set[str]:
    """Lines of solution code (stripped) that appear nowhere else in the instructor's notebook."""
    inside, outside = set(), set()
    for i, cell in enumerate(nb.cells):
        lines = cell.source.splitlines()
        spans = [range(b["first"], b["last"] + 1) for j, b in blocks_of(nb) if j == i]
        for k, line in enumerate(lines):
            (inside if any(k in s for s in spans) else outside).add(line.strip())
    return {line for line in inside - outside if line and not line.startswith("#")}


def test_every_lab_has_solutions_and_checks():
    assert len(LABS) == 6
    for path in LABS:
        nb = nbformat.read(path, as_version=4)
        assert blocks_of(nb), f"{path.name} has no ### BEGIN SOLUTION block"
        assert any("labs.check_" in c.source for c in nb.cells if c.cell_type == "code"), path.name


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_no_solution_line_survives(path):
    nb = nbformat.read(path, as_version=4)
    student = make_labs.student_notebook(nb, path.name)
    student_lines = {line.strip() for cell in student.cells for line in cell.source.splitlines()}
    survivors = sorted(solution_only_lines(nb) & student_lines)
    assert not survivors, f"{path.name}: solution lines in the student version: {survivors}"
    text = "\n".join(cell.source for cell in student.cells)
    assert make_labs.BEGIN not in text and make_labs.END not in text and make_labs.HINT not in text
    code = "\n".join(cell.source for cell in student.cells if cell.cell_type == "code")
    assert code.count("raise NotImplementedError(") == len(blocks_of(nb))
    assert not any("remove-input" in c.metadata.get("tags", []) or c.outputs for c in student.cells
                   if c.cell_type == "code")


def test_a_stub_keeps_the_indentation_and_fits_the_page():
    source = ("def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    ### HINT: add one to x,\n"
              "    ### HINT: then return it; \"quotes\" and a very long hint that goes on and on and on.\n"
              "    return x + y\n    ### END SOLUTION\n")
    student = make_labs.student_source(source, "test")
    assert "return x + y" not in student and student.startswith("def f(x):\n    y = 1\n    raise NotImplementedError(")
    assert all(len(line) <= make_labs.WIDTH for line in student.splitlines())
    namespace = {}
    exec(student, namespace)
    with pytest.raises(NotImplementedError) as info:
        namespace["f"](1)
    assert str(info.value) == ('f is yours to write. Add one to x, then return it; "quotes" and a very long hint '
                               'that goes on and on and on.')


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\n### HINT: h\nx = 1\n### END SOLUTION\n", "inside a function body"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n", "HINT"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### HINT: h\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without a"),
])
def test_a_bad_solution_block_is_named(source, problem):
    with pytest.raises(make_labs.LabSourceError, match=problem) as info:
        make_labs.student_source(source, "labs/x.ipynb, cell 3")
    assert "labs/x.ipynb, cell 3, line" in str(info.value)


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_student_lab_stops_at_its_first_check(path):
    instructor = nbformat.read(path, as_version=4)
    nb = make_labs.student_notebook(instructor, path.name)
    first_check = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "labs.check_" in c.source)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "labs")}})
    with pytest.raises(CellExecutionError):
        client.execute()
    errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.outputs)]
    assert errors == [first_check], f"{path.name}: errors in cells {errors}, expected only in cell {first_check}"
    assert [o.output_type for o in nb.cells[first_check].outputs] == ["error"]
    error = nb.cells[first_check].outputs[0]
    block = blocks_of(instructor)[0][1]
    assert error.ename == "NotImplementedError"
    assert error.evalue.endswith(block["hint"][1:]) and "is yours to write" in error.evalue, error.evalue
    stderr = [(i, o.text) for i, c in enumerate(nb.cells[:first_check]) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{path.name}: warnings before the first check: {stderr}"
