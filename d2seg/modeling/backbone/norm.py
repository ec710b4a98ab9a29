"""Normalisation layers by config name, and freezing BatchNorm into FrozenBatchNorm2d."""

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from d2seg.errors import ConfigError

_GN_GROUPS = 32
NORMS = ("FrozenBN", "BN", "SyncBN", "GN", "")


def get_norm(norm: str, channels: int) -> nn.Module:
    """A normalisation layer over ``channels``: "FrozenBN", "BN", "SyncBN", "GN" or "" (none).

    "SyncBN" is ``nn.SyncBatchNorm``: batch statistics over all processes of a distributed run,
    plain BatchNorm in one process (PyTorch syncs only when a process group is initialised, so
    it also trains on CPU). "GN" uses 32 groups, or the largest divisor of ``channels`` below 32
    when 32 does not divide it (narrow decoder stages).
    """
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if norm == "GN":
        groups = max(g for g in range(1, _GN_GROUPS + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "":
        return nn.Identity()
    raise ConfigError(f"norm {norm!r} is not one of {list(NORMS)}; fix: use one")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in ``module`` by a ``FrozenBatchNorm2d`` with its statistics.

    Returns the converted module (``module`` itself unless it is a BatchNorm; SyncBatchNorm
    included). Frozen stages
    must not update running statistics in ``train()`` mode, which ``requires_grad=False`` alone
    would not prevent.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen.to(module.weight.device)
    for name, child in module.named_children():
        converted = freeze_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
