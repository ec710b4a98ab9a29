"""Process-group helpers: rank/world size that also work when torch.distributed is off."""

from typing import Any

import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op in a single process."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Gather a picklable object from every process; ``[obj]`` in a single process."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard(items: list[Any]) -> list[Any]:
    """This process's contiguous share of ``items`` (all of them in a single process); the
    shards of ranks 0, 1, ... concatenated are ``items`` in order."""
    world, rank = get_world_size(), get_rank()
    return items[rank * len(items) // world:(rank + 1) * len(items) // world]
