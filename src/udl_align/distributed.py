"""Training on several processes started by ``torchrun`` (PyTorch DDP): ``gloo`` on CPUs,
``nccl`` on GPUs. Outside ``torchrun`` everything here is a no-op, so one code path serves both.

How the batch is shared: every rank draws the *whole* batch from the same seeded streams and
keeps its own rows (``rank::world``). The ranks therefore see different pairs, their random
states stay identical (a checkpoint needs only rank 0's), and the averaged gradient is the
gradient of the same total batch that one process would use: the same run, within the noise of
BatchNorm's per-rank statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from udl_align.errors import InputError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 logs, validates, checkpoints and calibrates."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def rows(self, n: int) -> slice:
        """This rank's rows of a batch of ``n``."""
        return slice(self.rank, n, self.world)


def start(device: str) -> Ranks:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``); a plain process is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(rank, world, local)


def check_batch(ranks: Ranks, batch_size: int) -> None:
    """InputError unless ``batch_size`` splits evenly over the processes."""
    if batch_size % ranks.world:
        raise InputError(f"the batch size {batch_size} does not split over {ranks.world} "
                         f"processes: give a multiple of {ranks.world}")


def agree(ranks: Ranks, *flags: bool) -> tuple[bool, ...]:
    """Rank 0's decisions (stop now? checkpoint now?) for every rank: collective steps, such
    as saving a checkpoint, must happen on all ranks at the same step."""
    if not ranks.active:
        return tuple(flags)
    t = torch.tensor([float(f) for f in flags])
    dist.broadcast(t, src=0)
    return tuple(bool(v) for v in t.tolist())


def rank0_value(ranks: Ranks, value: float) -> float:
    """Rank 0's ``value`` on every rank (e.g. the share of a time budget spent, which each
    process's own clock would see a little differently)."""
    if not ranks.active:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model to train with: DDP across the ranks, or the model itself."""
    if not ranks.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()


def stop(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["Ranks", "start", "check_batch", "agree", "wrap", "barrier", "stop"]
