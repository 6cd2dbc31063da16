"""Training on several processes: `fetalbrainseg train` under `torchrun --nproc_per_node N` joins
the process group that torchrun describes in its environment (gloo on the CPU, NCCL on GPUs, one GPU
per process). Without torchrun it is one process, and nothing here changes anything."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone validates, writes checkpoints and the log, and decides when to stop."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def join_process_group(device: torch.device) -> tuple[Ranks, torch.device]:
    """This process's ranks, and its device (its own GPU under torchrun); joins the group once."""
    ranks = Ranks(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )
    if not ranks.distributed:
        return ranks, device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def main_rank_says(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """Rank 0's answer, on every rank (a decision all ranks must take together, such as stopping)."""
    if not ranks.distributed:
        return flag
    answer = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(answer, src=0)
    return bool(answer.item())


def leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
