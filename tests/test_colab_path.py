"""The Colab path, tried end to end (issue 21).

The book tells a Colab reader to run two lines (README, "Running a chapter ... on Colab", and the
introduction's Colab cell). ``test_the_colab_lines_work_from_a_wheel`` does what they say in a
fresh virtual environment: bertmini built as a wheel and installed by the README's own ``pip``
line (the wheel in place of the git URL), after torch and ipykernel, which Colab already has;
then ``python -m bertmini.data fetch``; then chapters 0 and 1 executed by a kernel of that
environment, with a fresh cache, from a folder outside the repository (so ``import bertmini``
finds the wheel, not the source tree). It needs the package index, like ``make venv``
(``TORCH_SPEC`` as in the Makefile), and about two to three minutes on two cores.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INTRODUCTION = ROOT / "chapters" / "00_introduction.ipynb"
COLAB_CHAPTERS = ("00_introduction", "01_tokenization")
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")   # the Makefile's default
GIT_SPEC = re.compile(r'"bertmini @ git\+([^"]+)"')


def colab_lines(text: str) -> list[str]:
    """The notebook shell lines (``!pip ...``, ``!python ...``) a text tells a Colab reader to run."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith(("!pip ", "!python "))]


def readme_lines() -> list[str]:
    lines = colab_lines(README.read_text())
    assert len(lines) == 2 and lines[0].startswith("!pip install") and "bertmini.data fetch" in lines[1], (
        f"README.md should give the two Colab lines (pip install, then data fetch); found {lines}")
    return lines


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def test_readme_installs_from_the_configured_repository():
    match = GIT_SPEC.search(readme_lines()[0])
    assert match, 'the README\'s pip line should install "bertmini @ git+<repository URL>"'
    assert match.group(1).rstrip("/") == repository_url(), (
        f"the README installs from {match.group(1)}, but _config.yml names {repository_url()}: "
        "the repository is named once, in _config.yml; copy it from there")
    # the git URL, and Colab's address of a notebook (colab.research.google.com/github/ORG/REPO/...)
    named = set(re.findall(r"(?:github\.com|google\.com/github)/([\w-]+/[\w.-]+?)(?=/|\.git|[\"`\s])",
                           README.read_text()))
    assert named == {repository_url().split("github.com/")[1]}, (
        f"README.md names the repositories {sorted(named)}; _config.yml names {repository_url()}")


def test_introduction_says_what_the_readme_says():
    nb = nbformat.read(INTRODUCTION, as_version=4)
    intro = [line for cell in nb.cells for line in colab_lines(cell.source)]
    assert intro == readme_lines(), (
        "the introduction's Colab cell and the README's Colab lines differ:\n"
        f"  introduction: {intro}\n  README:       {readme_lines()}")


@pytest.mark.parametrize("display", [False, True])
def test_glue_without_myst_nb_writes_what_myst_nb_writes(monkeypatch, display):
    """Colab has no myst-nb: ``runtime.glue`` must still run, and leave the same output."""
    import IPython.display
    import myst_nb.ext.glue
    from bertmini import runtime

    theirs, ours = [], []
    monkeypatch.setattr(myst_nb.ext.glue, "ipy_display", lambda *a, **k: theirs.append((a, k)))
    runtime.glue("share", torch_scalar(0.25), display=display)
    monkeypatch.setitem(sys.modules, "myst_nb", None)          # as on Colab: the import fails
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: ours.append((a, k)))
    assert runtime.glue("share", torch_scalar(0.25), display=display) == 0.25
    assert ours == theirs and len(ours) == 1


def torch_scalar(x: float):
    import torch

    return torch.tensor(x)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{shlex.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def install_command(pip_line: str, wheel: Path, python: Path) -> list[str]:
    """The README's ``!pip install`` line with the wheel in place of the git URL."""
    args = shlex.split(pip_line.lstrip("!"))
    assert args[:2] == ["pip", "install"], pip_line
    specs = [str(wheel) if a.startswith("bertmini @ git+") else a for a in args[2:]]
    assert str(wheel) in specs, f"no 'bertmini @ git+...' requirement in {pip_line}"
    return [str(python), "-m", "pip", "install", *specs]


def execute(notebook: Path, python: Path, env: dict, workdir: Path) -> nbformat.NotebookNode:
    """Run ``notebook`` (a copy, in ``workdir``) on a kernel of the fresh environment."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    kernels = workdir / "kernels"
    spec = kernels / "colab-venv"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv", "language": "python", "env": env}))
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import bertmini, sys\nprint(bertmini.__file__)\n"
                                              "print(sys.executable)"))
    km = KernelManager(kernel_name="colab-venv", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def test_the_colab_lines_work_from_a_wheel(tmp_path):
    src, wheels, venv, cache, work = (tmp_path / n for n in ("src", "wheels", "venv", "cache", "work"))
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "bertmini", src / "bertmini", ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(src)])
    (wheel,) = wheels.glob("bertmini-*.whl")
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    # What Colab has before the reader's first cell: torch and a Jupyter kernel.
    run([str(python), "-m", "pip", "install", "--quiet", TORCH_SPEC, "ipykernel"])
    pip_line, fetch_line = readme_lines()
    run(install_command(pip_line, wheel, python))
    env = {"BERTMINI_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    fetch = shlex.split(fetch_line.lstrip("!"))
    assert fetch[0] == "python", fetch_line
    run([str(python), *fetch[1:]], env={**base_env, **env}, cwd=tmp_path)
    work.mkdir()
    for name in COLAB_CHAPTERS:
        copy = work / f"{name}.ipynb"
        shutil.copy(ROOT / "chapters" / copy.name, copy)
        nb = execute(copy, python, env, work)   # raises CellExecutionError on a failing cell
        where, executable = nb.cells[-1].outputs[0]["text"].split()
        assert Path(where).is_relative_to(venv) and Path(executable).parent == venv / "bin", (
            f"{name} ran bertmini from {where} with {executable}, not from the wheel in the fresh venv")
