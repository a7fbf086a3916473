"""Test-session glue shared by the unit tests and nbval.

`--nb-cache DIR` stores every notebook that nbval ran without an error, outputs
included, in the jupyter-cache at DIR. The book build (`execute_notebooks:
cache`) finds them there, so `make test` builds the executed book without
running any notebook a second time.
"""
from __future__ import annotations

import time

import pytest

_runs: dict = {}


# nbval waits only 5 s (hard-coded) for each of a cell's output messages after the kernel says
# it is done; on a loaded 2-core machine that can be too short.
NBVAL_OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(items):
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S


def pytest_addoption(parser):
    parser.addoption("--nb-cache", default=None,
                     help="jupyter-cache directory to store the notebooks nbval executed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = time.perf_counter()
    outcome = yield
    if type(item).__name__ != "IPyNbCell":
        return
    run = _runs.setdefault(item.parent, {"ok": True, "cells": 0, "seconds": 0.0})
    run["seconds"] += time.perf_counter() - start
    run["cells"] += 1
    if outcome.excinfo is not None:
        run["ok"] = False
    if not item.config.getoption("--nb-cache"):
        return
    item.cell.outputs = list(item.test_outputs or [])
    item.cell.execution_count = run["cells"]
    for out in item.cell.outputs:
        if out.get("output_type") == "execute_result":
            out["execution_count"] = run["cells"]


def pytest_terminal_summary(terminalreporter):
    if _runs:
        terminalreporter.write_sep("-", "notebook execution times (cells only, kernel start excluded)")
        for nbfile, run in sorted(_runs.items(), key=lambda kv: str(kv[0].path)):
            status = "ok" if run["ok"] else "FAILED"
            terminalreporter.write_line(f"{run['seconds']:7.1f} s  {status:6}  {nbfile.path.name}")


def pytest_sessionfinish(session):
    cache_path = session.config.getoption("--nb-cache")
    if not cache_path or not _runs:
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_path)
    for nbfile, run in _runs.items():
        n_code = sum(c.cell_type == "code" for c in nbfile.nb.cells)
        if not run["ok"] or run["cells"] != n_code:
            continue
        bundle = CacheBundleIn(nbfile.nb, str(nbfile.path.resolve()),
                               data={"execution_seconds": run["seconds"]})
        cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
