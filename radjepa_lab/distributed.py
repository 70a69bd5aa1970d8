"""The thin layer between the trainer and ``torch.distributed`` (torchrun + DDP).

No home-made distribution: ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR,
we call ``init_process_group`` (NCCL on GPUs, gloo on CPU) and wrap the online
networks in ``DistributedDataParallel``. A process group created by the caller (e.g. a
test using ``torch.multiprocessing.spawn``) is reused as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False  # we own the group and must destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (or the one already initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, created_group=True)


def teardown(info: DistInfo) -> None:
    if info.created_group and dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over ranks (identity when not distributed)."""
    if not info.enabled:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the verdict on the run folder only rank 0 checks)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def max_across_ranks(value: int, info: DistInfo, device: torch.device, now: bool = True) -> int:
    """The largest ``value`` over ranks (e.g. a signal one rank received). Under DDP it is
    agreed only when ``now`` (the trainer's check steps: every step on CPU, log and checkpoint
    steps on GPU, where a per-step host sync would cost); otherwise 0 until then."""
    if not info.enabled:
        return value
    if not now:
        return 0
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
