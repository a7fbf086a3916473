"""Launched by tests/test_ddp.py as ``torchrun --nproc_per_node=2 tests/ddp_worker.py OUT_DIR``.

Every process trains the same model on the same shuffled stream of global batches
of 16 and keeps its half (8 + 8); ``bertmini.train`` does the slicing and the DDP
wrapping. Each rank writes its final weights and history to ``OUT_DIR/rank{r}.*``;
rank 0 alone writes the checkpoint under ``OUT_DIR/ckpt``. Then a second run
stops at step 5 and resumes; its final weights go to ``OUT_DIR/rank{r}-resumed.*``.

The model and data live here so the test can train the one-process reference
on the whole batches with exactly the same definitions. No dropout, and a loss
that is a mean over examples: then the mean of the two half-batch gradients
(what DDP computes) is the whole-batch gradient.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bertmini.train import TrainConfig, train

GLOBAL_BATCH = 16


@dataclass
class Out:  # a dataclass (or dict, or tuple): DDP looks inside for the tensors the loss used
    loss: torch.Tensor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(8, 32)
        self.LayerNorm = nn.LayerNorm(32)
        self.out = nn.Linear(32, 1)
        self.unused_head = nn.Linear(32, 2)  # like the NSP head when training MLM alone: no gradient
        # the first feature of every row each forward sees: the test checks that each rank
        # really ran on its own half (a rank on the whole batch computes the same gradients)
        self.rows_seen: list[list[float]] = []

    def forward(self, x, y):
        self.rows_seen.append(x[:, 0].tolist())
        pred = self.out(self.LayerNorm(torch.tanh(self.dense(x)))).squeeze(-1)
        return Out(((pred - y) ** 2).mean())


def make_model() -> Net:
    torch.manual_seed(3)
    return Net()


def make_loader() -> DataLoader:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(160, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8) + 0.1 * torch.randn(160, generator=g)

    def collate(items):
        return {"x": torch.stack([i[0] for i in items]), "y": torch.stack([i[1] for i in items])}

    return DataLoader(TensorDataset(x, y), batch_size=GLOBAL_BATCH, shuffle=True, collate_fn=collate)


def make_config(**kw) -> TrainConfig:
    # accumulation 2 exercises DDP's no_sync; clipping acts on the all-reduced gradient
    return TrainConfig(lr=1e-2, max_steps=12, grad_accum_steps=2, max_grad_norm=0.5, amp=None,
                       log_every=4, progress=False, device="cpu", **kw)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    model = make_model()
    history = train(model, make_loader(), make_config(checkpoint_dir=out / "ckpt"))
    rank = int(os.environ["RANK"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world_size": torch.distributed.get_world_size(),
        "is_initialized": torch.distributed.is_initialized(),
        "backend": str(torch.distributed.get_backend()),
        "history": history.to_dict(),
        "rows_seen": model.rows_seen,
    }))

    # Stopped at step 5 (rank 0's callback decides; rank 1's would have stopped at 2) and resumed from
    # rank 0's checkpoint: the same weights as the uninterrupted run above, exactly.
    part = train(make_model(), make_loader(), make_config(checkpoint_dir=out / "ckpt2"),
                 callbacks=[lambda info: info["step"] == (5 if rank == 0 else 2)])
    resumed_model = make_model()
    train(resumed_model, make_loader(), make_config(checkpoint_dir=out / "ckpt2"), resume=True)
    save_file({k: v.contiguous() for k, v in resumed_model.state_dict().items()},
              str(out / f"rank{rank}-resumed.safetensors"))
    (out / f"rank{rank}-stopped.json").write_text(json.dumps({"steps": len(part), "reason": part.stop_reason}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
