"""The Colab install line names the repository set in _config.yml, the same in the README and
in chapter 0 (issue 15: chapter 0 had a literal `<repository URL>` placeholder)."""
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pip_lines(text):
    return [line.strip() for line in text.splitlines() if line.strip().startswith("!pip install")]


def test_readme_and_chapter_0_install_bertmini_from_the_configured_repository():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    readme = _pip_lines((ROOT / "README.md").read_text())
    nb = nbformat.read(ROOT / "chapters" / "00_introduction.ipynb", as_version=4)
    chapter = _pip_lines("\n".join(c.source for c in nb.cells))
    assert readme and chapter, "no '!pip install' line found in the README or in chapter 0"
    expected = f'"bertmini @ git+{url}"'
    for where, lines in (("README.md", readme), ("chapter 0", chapter)):
        assert all(expected in line for line in lines), (
            f"{where} installs bertmini from elsewhere than repository.url in _config.yml "
            f"({url}): {lines}")
    assert readme == chapter, f"the README and chapter 0 differ: {readme} vs {chapter}"
