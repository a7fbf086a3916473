"""Data parallelism for :func:`bertmini.train.train` when launched by ``torchrun``.

Every process seeds alike, reads the same batch stream and keeps its own contiguous
slice of every batch (a global batch of 32 on two processes is 16 + 16); DDP averages
the gradients, which equals the one-process gradient when the loss is a mean over
examples and the batch splits evenly. A ``DataLoader`` with a ``DistributedSampler``
shards already and is left unsliced. Only rank 0 shows progress, evaluates and writes
checkpoints.

A loss averaged over *tokens* (MLM) weighs the two halves by their own token counts,
so DDP's mean of the halves is close to, not equal to, the one-process loss. ``nccl``
on GPUs follows the same code path as ``gloo``, but is tested only on the CPU here.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _wants_cuda(device) -> bool:
    return torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()


def init_distributed(device: torch.device | None) -> tuple[Dist, torch.device | None]:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        info = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        info = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        if _wants_cuda(device):
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if _wants_cuda(device) else "gloo")
    else:
        return Dist(), device
    if info.enabled and _wants_cuda(device) and (device is None or torch.device(device).index is None):
        device = torch.device("cuda", info.local_rank)  # one GPU per process
    return info, device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    # find_unused_parameters: a head the loss does not use (the NSP head when training MLM
    # alone) gets no gradient, which DDP otherwise takes for a bug (as transformers' Trainer)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def shard(batch: Mapping[str, Any], info: Dist) -> dict[str, Any]:
    """This process's contiguous slice of every batch-sized tensor."""
    sizes = {v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0}
    if len(sizes) != 1:
        raise ValueError(f"cannot split a batch whose tensors disagree on the batch size: {sorted(sizes)}")
    (n,) = sizes
    if n < info.world_size:
        raise ValueError(f"a batch of {n} cannot be split over {info.world_size} processes; "
                         "use a larger batch or drop_last=True")
    return {k: torch.tensor_split(v, info.world_size)[info.rank]
            if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in batch.items()}


def mean_over_processes(values: torch.Tensor, tokens: torch.Tensor) -> None:
    """In place: average the logged values over the processes, sum their token counts."""
    import torch.distributed as dist

    dist.all_reduce(values)
    values /= dist.get_world_size()
    dist.all_reduce(tokens)


def broadcast_choice(choice, choices: tuple, device: torch.device):
    """Rank 0's ``choice`` (one of ``choices``), for every process."""
    import torch.distributed as dist

    code = torch.tensor([choices.index(choice)], device=device)
    dist.broadcast(code, src=0)
    return choices[int(code.item())]


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()
