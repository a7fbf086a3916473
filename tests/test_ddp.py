"""Data parallel through torchrun: two processes on half batches = one process on whole batches."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertmini.checkpoint import load_checkpoint
from bertmini.train import train

HERE = Path(__file__).parent
spec = importlib.util.spec_from_file_location("ddp_worker", HERE / "ddp_worker.py")
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_on_half_batches_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    torch.set_num_threads(1)
    reference = worker.make_model()
    ref_history = train(reference, worker.make_loader(), worker.make_config())
    expected = reference.state_dict()

    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(i["world_size"] == 2 and i["backend"] == "gloo" for i in infos)
    # each rank ran on its own contiguous half of every global batch: two ranks on the whole
    # batches (no slicing) would match the reference just as well
    seen = [i["rows_seen"] for i in infos]
    assert len(seen[0]) == len(seen[1]) == len(reference.rows_seen) == 12 * 2  # steps x accumulation
    for half0, half1, whole in zip(seen[0], seen[1], reference.rows_seen):
        assert len(half0) == len(half1) == len(whole) // 2 == 8 and half0 + half1 == whole
    for k, v in expected.items():
        assert torch.equal(ranks[0][k], ranks[1][k]), f"ranks disagree on {k}"  # DDP keeps replicas identical
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    # the weights moved (so agreeing is not trivial), and the start was the same
    assert not torch.allclose(expected["dense.weight"], worker.make_model().dense.weight)

    # the history is of the global batch: losses averaged over processes, tokens summed
    hist = infos[0]["history"]["records"]
    assert [r["step"] for r in hist] == ref_history.steps
    assert [r["loss"] for r in hist] == pytest.approx(ref_history.losses, rel=1e-5)
    assert [r["tokens"] for r in hist] == [r["tokens"] for r in ref_history.records] == [32.0] * 12
    timing = ("elapsed", "tokens_per_s")  # each process has its own clock
    assert [{k: v for k, v in r.items() if k not in timing} for r in hist] == [
        {k: v for k, v in r.items() if k not in timing} for r in infos[1]["history"]["records"]]

    # rank 0 wrote the checkpoint, with the same weights
    model = worker.make_model()
    assert load_checkpoint(tmp_path / "ckpt" / "last", model)["step"] == 12
    for k, v in model.state_dict().items():
        assert torch.equal(v, ranks[0][k])

    # stopped at step 5 on every rank (rank 0 decides) and resumed under DDP: exactly the same weights
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}-stopped.json").read_text()) == {"steps": 5, "reason": "callback"}
        resumed = load_file(str(tmp_path / f"rank{r}-resumed.safetensors"))
        for k in expected:
            assert torch.equal(resumed[k], ranks[r][k]), f"rank {r} resumed differs on {k}"
