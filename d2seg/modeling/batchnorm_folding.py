"""Inference with each BatchNorm folded into the conv that feeds it.

In eval mode a BatchNorm (``nn.BatchNorm2d``, ``nn.SyncBatchNorm``, torchvision's
``FrozenBatchNorm2d``) is the per-channel affine map ``y = (x - mean) / sqrt(var + eps) * weight
+ bias``; right after a conv it folds into the conv's weight and bias, which saves a full pass
over every normalised activation (FrozenBatchNorm2d: two). The result equals the plain
computation up to float rounding (~1e-6 relative per layer).

* :func:`fold_batchnorm`: a copy of a module with every such pair folded (the BatchNorm becomes
  ``nn.Identity``), for inference only.
* :func:`inference_module`: what the meta-architectures call on their backbone and head: the
  module itself whenever it may be trained or differentiated, otherwise a folded copy cached
  per module and rebuilt when any of its parameters or buffers changed.

A pair is folded only where the code guarantees the conv's output goes to the BatchNorm alone:
consecutive children of an ``nn.Sequential`` (the conv may be the last child of a nested
Sequential, e.g. a depthwise-separable conv), and the ``convK``/``bnK`` attributes of the blocks
in :data:`NAMED_PAIRS`, whose ``forward`` is known. Subclasses of ``nn.Conv2d`` (deformable
convs) and BatchNorms that normalise with batch statistics in eval mode
(``track_running_stats=False``) are left as they are.
"""

import copy
import weakref
from typing import Iterator

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from d2seg.modeling.backbone.resnet import ResNet

# Blocks whose forward feeds each conv attribute only into the norm attribute named with it.
NAMED_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    ResNet: (("conv1", "bn1"),),
}


def _is_foldable_norm(module: nn.Module) -> bool:
    if isinstance(module, FrozenBatchNorm2d):
        return True
    return (isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not module.training
            and module.running_mean is not None)


def _trailing_conv(module: nn.Module) -> nn.Conv2d | None:
    """The plain conv that produces ``module``'s output: itself, or the last child of a
    (nested) Sequential."""
    while isinstance(module, nn.Sequential) and len(module) > 0:
        module = module[-1]
    return module if type(module) is nn.Conv2d and not module.training else None


def _pairs(root: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Conv2d, nn.Module]]:
    """(parent, norm attribute name, conv, norm) for each foldable pair under ``root``."""
    for parent in root.modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            links = [(producer, name) for (_, producer), (name, _) in zip(children, children[1:])]
        else:
            pairs = NAMED_PAIRS.get(type(parent), ())
            links = [(getattr(parent, conv), norm) for conv, norm in pairs]
        for producer, norm_name in links:
            conv, norm = _trailing_conv(producer), getattr(parent, norm_name)
            if conv is not None and _is_foldable_norm(norm):
                yield parent, norm_name, conv, norm


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Replace ``conv``'s weight and bias by the conv followed by ``norm`` (computed in float64,
    stored in the conv's dtype)."""
    weight, variance = conv.weight.double(), norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(variance)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(variance)
    scale = gamma / torch.sqrt(variance + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded_bias = (bias - norm.running_mean.double()) * scale + beta
    shape = (-1,) + (1,) * (weight.dim() - 1)
    conv.weight = nn.Parameter((weight * scale.view(shape)).to(conv.weight.dtype), False)
    conv.bias = nn.Parameter(folded_bias.to(conv.weight.dtype), False)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` for inference, each conv → BatchNorm pair (see the module docstring)
    replaced by one conv; the BatchNorm becomes ``nn.Identity``.

    The copy shares every tensor of ``module`` except the folded conv weights/biases (new
    tensors), so it costs the memory of those alone. It has no BatchNorm to train: use it in
    eval mode, without gradients, and rebuild it after changing ``module``'s weights.
    """
    with torch.inference_mode(False):  # plain tensors, usable outside inference mode too
        shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
        folded = copy.deepcopy(module, memo=shared)
        for parent, norm_name, conv, norm in list(_pairs(folded)):
            _fold_into(conv, norm)
            setattr(parent, norm_name, nn.Identity())
    return folded.eval()


def _state_signature(module: nn.Module) -> list | None:
    """None while ``module`` could be trained or differentiated, or is observed by forward hooks
    that expect its own submodules to run; otherwise the identity, storage and version counter
    of each parameter and buffer. Any in-place update (``load_state_dict``, an optimizer step)
    bumps a version counter; ``.to()``/``.half()`` allocate new storage. (Writes through
    ``tensor.data`` bypass the version counter; d2seg makes none on a built model.) One walk
    over the modules: this runs on every inference call."""
    if torch.is_grad_enabled():
        return None
    signature = []
    for m in module.modules():
        if m.training or m._forward_hooks or m._forward_pre_hooks:
            return None
        for tensors in (m._parameters.values(), m._buffers.values()):
            for t in tensors:
                if t is not None:
                    signature += (id(t), t.data_ptr(), t._version)
    return signature


# module -> (state signature, folded copy); weak keys: a dropped model frees its copy.
_FOLDED: "weakref.WeakKeyDictionary[nn.Module, tuple[list, nn.Module]]" = (
    weakref.WeakKeyDictionary())


def inference_module(module: nn.Module) -> nn.Module:
    """``module`` itself in training mode, with gradients enabled or with forward hooks on it;
    otherwise (eval mode under ``torch.no_grad()``/``torch.inference_mode()``) its
    :func:`fold_batchnorm` copy, built on first use and rebuilt when a parameter or buffer of
    ``module`` changed (see :func:`_state_signature`). The returned module is called exactly as
    ``module`` is.
    """
    signature = _state_signature(module)
    if signature is None:
        return module
    cached = _FOLDED.get(module)
    if cached is None or cached[0] != signature:
        cached = (signature, fold_batchnorm(module))
        _FOLDED[module] = cached
    return cached[1]
