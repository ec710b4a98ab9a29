"""Optimizers with Detectron2's parameter groups, and gradient clipping."""

from typing import Any, Callable, Iterable

import torch
from torch import nn

from d2seg.config import CfgNode

_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    nn.LayerNorm,
)


def get_default_optimizer_params(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
) -> list[dict[str, Any]]:
    """Detectron2's parameter groups: norm layers get ``weight_decay_norm``; biases get
    ``base_lr × bias_lr_factor`` and ``weight_decay_bias``; frozen parameters are left out.
    Groups with equal hyper-parameters are merged."""
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr, wd = base_lr, weight_decay
            if isinstance(module, _NORM_TYPES):
                wd = weight_decay_norm
            if name == "bias":
                lr, wd = base_lr * bias_lr_factor, weight_decay_bias
            groups.setdefault((lr, wd), []).append(param)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` ("SGD" or "AdamW") over Detectron2's parameter groups."""
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    if cfg.SOLVER.OPTIMIZER == "AdamW":
        return torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR)
    return torch.optim.SGD(
        params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV
    )


def build_gradient_clipper(cfg: CfgNode) -> Callable[[Iterable[torch.Tensor]], None] | None:
    """``SOLVER.CLIP_GRADIENTS``: clip by value or by global norm; ``None`` when disabled."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return None
    if clip.CLIP_TYPE == "norm":
        return lambda params: nn.utils.clip_grad_norm_(
            list(params), clip.CLIP_VALUE, clip.NORM_TYPE
        )
    return lambda params: nn.utils.clip_grad_value_(list(params), clip.CLIP_VALUE)
