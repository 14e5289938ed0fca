"""Training under ``torchrun``: the process group, each process's share of a batch, sums
over processes.

``torchrun --nproc_per_node=N`` starts N processes and tells each its place through
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_distributed` joins them (gloo on
CPU, NCCL on GPU). Alone, everything here is a no-op: ``Dist()`` is one process of one.

>>> import torch
>>> d = Dist(rank=1, world=2)
>>> shard(torch.arange(5), d)
(tensor([1, 3]), tensor([1., 1.]))
>>> shard(torch.arange(1), d)       # no share: the first sample, weighted 0
(tensor([0]), tensor([0.]))
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if world <= 1:
        return Dist(), dev
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local), dev


def is_main_process() -> bool:
    """Whether this is the first process (or the only one), before any group is joined."""
    return int(os.environ.get("RANK", "0")) == 0


def all_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    """Each value summed over every process (a collective under DDP)."""
    if not d.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard(batch: torch.Tensor, d: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of a global batch and per-sample weights (a process with no
    share takes the batch's first sample with weight 0, so it still joins the
    gradient exchange)."""
    mine = batch[d.rank::d.world] if d.active else batch
    if len(mine) == 0:
        return batch[:1], torch.zeros(1)
    return mine, torch.ones(len(mine))


def gather_rows(values: dict[str, torch.Tensor], positions: torch.Tensor, total: int,
                d: Dist) -> dict[str, torch.Tensor]:
    """Rows each process computed for its `positions`, put together on every process."""
    gathered: list = [None] * d.world
    dist.all_gather_object(gathered, (positions, values))
    full: dict[str, torch.Tensor] = {}
    for pos, vals in gathered:
        for k, v in vals.items():
            if k not in full:
                full[k] = torch.empty((total, *v.shape[1:]), dtype=v.dtype)
            full[k][pos] = v
    return full


def barrier(d: Dist) -> None:
    """Wait for every process (nothing to wait for alone)."""
    if d.active:
        dist.barrier()


def close() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
