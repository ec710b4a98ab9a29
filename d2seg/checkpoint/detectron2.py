"""Detectron2 model-zoo weights: ``.pkl`` files read as plain data, their names mapped to d2seg's.

Two kinds of files, both as Detectron2 publishes them:

* ImageNet trunks from Caffe2/MSRA (``R-50.pkl``, ``X-101-32x8d.pkl``): ``{name: ndarray}`` (or
  under ``"blobs"``) with Caffe2 names such as ``conv1_w``, ``res_conv1_bn_s``,
  ``res2_0_branch2a_w``, ``res2_0_branch1_bn_b``;
* Detectron2-trained models (``model_final_*.pkl`` / ``.pth``): ``{"model": {name: array}}``
  with Detectron2 module names (``backbone.bottom_up.res2.0.conv1.weight``,
  ``backbone.fpn_lateral2.weight``, ``proposal_generator.rpn_head.objectness_logits.weight``,
  ``roi_heads.box_predictor.cls_score.weight``, ``roi_heads.mask_head.mask_fcn1.weight``;
  PointRend's ``roi_heads.mask_head.{coarse,parameter}_head.fc1.weight``,
  ``sem_seg_head.coarse_sem_seg_head.scale_heads.1.0.norm.weight``,
  ``sem_seg_head.point_head.fc1.weight``; Cascade R-CNN's stages as
  ``roi_heads.box_head.<stage>.fc1.weight``, ``roi_heads.box_predictor.<stage>.cls_score.weight``,
  ...).

:func:`load_pkl` unpickles with a restricted unpickler: only dicts, lists, tuples, numbers,
strings and numpy arrays can be built; any other global in the pickle raises
:class:`~d2seg.errors.CheckpointError` before it is looked up, so no code in the file runs.

:func:`map_detectron2_state_dict` renames Caffe2 names to Detectron2's (Detectron2's own
``convert_basic_c2_names`` rules), then Detectron2's to d2seg's (torchvision module names), and
moves the background class of the box and mask predictors from Detectron2's last row to
torchvision's first. :class:`MappingReport` lists what was loaded, skipped (shape differs) and
missing.

Remaining difference from Detectron2 with the same weights: torchvision rounds its base
anchors to whole pixels (Detectron2 does not). Caffe2/MSRA weights loaded into a trunk that
strides in the 3×3 conv (``MODEL.RESNETS.STRIDE_IN_1X1 False``) log a warning.
"""

import logging
import pickle
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from d2seg.errors import CheckpointError

logger = logging.getLogger(__name__)

# The globals a pickle of numpy arrays needs; nothing else is ever resolved.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_GLOBALS:
            raise CheckpointError(
                f"{self.filename} holds a pickled object {module}.{name}, not plain data (dicts, "
                "lists, numbers, strings, numpy arrays); it was not run; fix: use a Detectron2 "
                "model-zoo .pkl, or re-save the weights as a state dict with torch.save"
            )
        return super().find_class(module, name)


def load_pkl(filename: str) -> dict[str, Any]:
    """A Detectron2 ``.pkl`` as ``{"model": {name: Tensor}, ...}`` (Caffe2 trunks: the blobs
    under ``"model"``); raises :class:`CheckpointError` for anything but plain data."""
    try:
        with open(filename, "rb") as f:
            unpickler = _DataUnpickler(f, encoding="latin1")
            unpickler.filename = filename
            data = unpickler.load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{filename} is not a readable .pkl ({type(e).__name__}: {e}); fix: point "
            "MODEL.WEIGHTS at a Detectron2 model-zoo .pkl or a .pth state dict"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{filename} holds a {type(data).__name__}, not a dict of arrays")
    weights = data.get("model", data.get("blobs", data))
    if not isinstance(weights, dict):
        raise CheckpointError(f"{filename}: its 'model' entry is not a dict of arrays")
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()
        if isinstance(v, np.ndarray) and not k.endswith("_momentum")
    }
    return {"model": tensors, "__author__": data.get("__author__", "")}


def convert_caffe2_names(names: list[str]) -> dict[str, str]:
    """Caffe2/MSRA names → Detectron2 names (Detectron2's ``convert_basic_c2_names``)."""
    mapped = {}
    for original in names:
        k = original.replace("_", ".")
        k = re.sub(r"\.b$", ".bias", k)
        k = re.sub(r"\.w$", ".weight", k)
        for pattern, new in (
            (r"bn\.s$", "norm.weight"), (r"bn\.bias$", "norm.bias"), (r"bn\.rm$", "norm.running_mean"),
            (r"bn\.running\.mean$", "norm.running_mean"), (r"bn\.riv$", "norm.running_var"),
            (r"bn\.running\.var$", "norm.running_var"), (r"bn\.gamma$", "norm.weight"),
            (r"bn\.beta$", "norm.bias"), (r"gn\.s$", "norm.weight"), (r"gn\.bias$", "norm.bias"),
        ):
            k = re.sub(pattern, new, k)
        k = re.sub(r"^res\.conv1\.norm\.", "conv1.norm.", k)
        k = re.sub(r"^conv1\.", "stem.conv1.", k)
        for old, new in ((".branch1.", ".shortcut."), (".branch2a.", ".conv1."),
                         (".branch2b.", ".conv2."), (".branch2c.", ".conv3.")):
            k = k.replace(old, new)
        mapped[original] = k
    return mapped


def is_caffe2_state_dict(state_dict: dict[str, Any]) -> bool:
    return any(re.match(r"res\d_\d+_branch2a_w$", k) for k in state_dict)


def is_detectron2_state_dict(state_dict: dict[str, Any]) -> bool:
    """Names only Detectron2's modules have (d2seg's trunk is torchvision's: conv1, layer1..)."""
    return any(k.startswith("proposal_generator.rpn_head.") or
               re.match(r"(backbone\.bottom_up\.)?(stem\.conv1\.|res[2-5]\.\d+\.)", k)
               for k in state_dict)


_TRUNK_RULES = (
    (r"stem\.conv1\.norm\.", "bn1."),
    (r"stem\.conv1\.", "conv1."),
    (r"res(\d)\.(\d+)\.conv(\d)\.norm\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}."),
    (r"res(\d)\.(\d+)\.conv(\d)\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}."),
    (r"res(\d)\.(\d+)\.shortcut\.norm\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1."),
    (r"res(\d)\.(\d+)\.shortcut\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0."),
)
_RES5_HEAD_RULES = (
    (r"(\d+)\.conv(\d)\.norm\.", r"\1.bn\2."),
    (r"(\d+)\.shortcut\.norm\.", r"\1.downsample.1."),
    (r"(\d+)\.shortcut\.", r"\1.downsample.0."),
)


def _trunk_name(name: str) -> str | None:
    for pattern, new in _TRUNK_RULES:
        renamed, count = re.subn("^" + pattern, new, name)
        if count:
            return renamed
    return None


def _head_name(name: str, model: nn.Module) -> str | None:
    """A Detectron2 name outside the trunk → d2seg's, for the modules ``model`` has."""
    fpn = re.match(r"backbone\.fpn_(lateral|output)(\d)\.(norm\.)?(.*)$", name)
    if fpn:
        blocks = "inner_blocks" if fpn[1] == "lateral" else "layer_blocks"
        levels = sorted(int(f[-1]) for f in getattr(getattr(model, "backbone", None),
                                                   "in_features", []))
        if int(fpn[2]) not in levels:
            return None
        layer = 1 if fpn[3] else 0  # torchvision's Conv2dNormActivation: conv, then norm
        return f"backbone.fpn.{blocks}.{levels.index(int(fpn[2]))}.{layer}.{fpn[4]}"
    for old, new in (
        ("proposal_generator.rpn_head.conv.", "rpn.head.conv.0.0."),
        ("proposal_generator.rpn_head.objectness_logits.", "rpn.head.cls_logits."),
        ("proposal_generator.rpn_head.anchor_deltas.", "rpn.head.bbox_pred."),
        ("roi_heads.box_predictor.", "roi_heads.box_predictor."),
        ("roi_heads.mask_head.deconv.", "roi_heads.mask_head.predictor.conv5_mask."),
        ("roi_heads.mask_head.point_head.predictor.", "roi_heads.mask_head.point_head.predictor."),
        ("roi_heads.mask_head.point_head.positional_encoding_gaussian_matrix",
         "roi_heads.mask_head.point_head.positional_encoding_gaussian_matrix"),
        ("roi_heads.mask_head.predictor.", "roi_heads.mask_head.predictor.mask_fcn_logits."),
        ("sem_seg_head.point_head.predictor.", "sem_seg_head.point_head.predictor."),
    ):
        if name.startswith(old):
            return new + name[len(old):]
    # PointRend's ConvFCHead (coarse head; Implicit PointRend's parameter head): fc<k> (named
    # coarse_mask_fc<k> before Detectron2's version 2) follows a ReLU in d2seg's Sequential.
    conv_fc = re.match(r"(roi_heads\.mask_head\.(?:coarse|parameter)_head)\.(reduce_(?:spatial|channel)_dim_conv"
                       r"|(?:coarse_mask_)?fc(\d+)|prediction)\.(.*)$", name)
    if conv_fc:
        layer = {"reduce_spatial_dim_conv": "reduce", "prediction": "predictor",
                 "reduce_channel_dim_conv": "reduce_channels.0"}.get(
            conv_fc[2], f"layers.{2 * int(conv_fc[3] or 0)}")
        return f"{conv_fc[1]}.{layer}.{conv_fc[4]}"
    point_fc = re.match(r"(roi_heads\.mask_head|sem_seg_head)\.point_head\.fc(\d+)\.(.*)$", name)
    if point_fc:
        return f"{point_fc[1]}.point_head.fc_layers.{int(point_fc[2]) - 1}.{point_fc[3]}"
    semantic = _semantic_fpn_name(name, model)
    if semantic:
        return semantic
    mask_conv = re.match(r"roi_heads\.mask_head\.mask_fcn(\d+)\.(norm\.)?(.*)$", name)
    if mask_conv:
        return f"roi_heads.mask_head.convs.{int(mask_conv[1]) - 1}.{1 if mask_conv[2] else 0}." \
               f"{mask_conv[3]}"
    box = re.match(r"roi_heads\.box_head\.((\d+)\.)?(conv|fc)(\d+)\.(norm\.)?(.*)$", name)
    if box and hasattr(getattr(model, "roi_heads", None), "box_head"):
        head, prefix = model.roi_heads.box_head, "roi_heads.box_head."
        # Cascade R-CNN: one box head per stage, box_head.<stage>. in both trees.
        if isinstance(head, nn.ModuleList) != bool(box[1]):
            return None
        if box[1]:
            if int(box[2]) >= len(head):
                return None
            head, prefix = head[int(box[2])], f"{prefix}{box[1]}"
        children = list(head.named_children())
        convs = [n for n, m in children if not isinstance(m, (nn.Linear, nn.Flatten, nn.ReLU))]
        fcs = [n for n, m in children if isinstance(m, nn.Linear)]
        index = int(box[4]) - 1
        if box[3] == "conv" and index < len(convs):
            return f"{prefix}{convs[index]}.{1 if box[5] else 0}.{box[6]}"
        if box[3] == "fc" and index < len(fcs):
            return f"{prefix}{fcs[index]}.{box[6]}"
        return None
    res5 = re.match(r"roi_heads\.res5\.(.*)$", name)
    if res5:
        rest = res5[1]
        for pattern, new in _RES5_HEAD_RULES:
            rest = re.sub("^" + pattern, new, rest)
        return f"roi_heads.res5.{rest}"
    return None


def _semantic_fpn_name(name: str, model: nn.Module) -> str | None:
    """Detectron2's ``SemSegFPNHead`` (Panoptic FPN's ``sem_seg_head``, PointRend's
    ``sem_seg_head.coarse_sem_seg_head``) → d2seg's. Each Detectron2 branch is [conv (norm
    inside), Upsample]×n, d2seg's [conv, norm, ReLU, Upsample]×n: the k-th conv maps to the k-th
    conv, its norm to the module after it."""
    match = re.match(r"(sem_seg_head\.(?:coarse_sem_seg_head\.)?)(scale_heads\.\d+)\.(\d+)\."
                     r"(norm\.)?(.*)$", name)
    if match is None:
        prefix = re.match(r"sem_seg_head\.(coarse_sem_seg_head\.)?predictor\.", name)
        return name if prefix else None
    try:
        branch = model.get_submodule((match[1] + match[2]))
    except AttributeError:
        return None
    children = list(branch.named_children())
    convs = [i for i, (_, m) in enumerate(children) if isinstance(m, nn.Conv2d)]
    upsamples = any(isinstance(m, nn.Upsample) for _, m in children)
    k = int(match[3]) // 2 if upsamples else int(match[3])
    if k >= len(convs):
        return None
    index = convs[k] + (1 if match[4] else 0)
    return f"{match[1]}{match[2]}.{children[index][0]}.{match[5]}"


def _trunk_prefixes(model: nn.Module) -> list[str]:
    from d2seg.modeling.backbone.resnet import ResNet

    return [f"{n}." if n else "" for n, m in model.named_modules() if isinstance(m, ResNet)]


def _background_first(name: str, value: Tensor, own: Tensor) -> Tensor:
    """Detectron2 puts the background score last and has no background box/mask slot;
    torchvision's predictors have it first."""
    if re.search(r"box_predictor\.(\d+\.)?cls_score\.(weight|bias)$", name):
        if value.shape[0] == own.shape[0]:
            return torch.cat([value[-1:], value[:-1]])
    if re.search(r"\.box_predictor\.(\d+\.)?bbox_pred\.", name) \
            and value.shape[0] + 4 == own.shape[0]:
        return torch.cat([value.new_zeros((4, *value.shape[1:])), value])
    if name.endswith(("mask_fcn_logits.weight", "mask_fcn_logits.bias")):
        if value.shape[0] + 1 == own.shape[0]:
            return torch.cat([value.new_zeros((1, *value.shape[1:])), value])
    return value


@dataclass
class MappingReport:
    """What a foreign state dict gave the model: keys loaded, skipped (file shape, model shape)
    and missing (model keys the file has no value for), and file keys nothing maps to."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.loaded)} tensors loaded, {len(self.skipped)} skipped (shape), "
                 f"{len(self.missing)} missing, {len(self.unused)} unused"]
        lines += [f"  skipped {k}: file {list(a)} vs model {list(b)}" for k, a, b in self.skipped]
        lines += [f"  missing {k}" for k in self.missing[:20]]
        lines += [f"  unused {k}" for k in self.unused[:20]]
        return "\n".join(lines)


def map_detectron2_state_dict(
    state_dict: dict[str, Tensor], model: nn.Module
) -> tuple[dict[str, Tensor], MappingReport]:
    """A Caffe2-named or Detectron2-named state dict keyed and shaped for ``model``.

    Trunk names without a prefix (ImageNet files) go to every ResNet trunk inside ``model``.
    Returns (the mapped state dict, keeping only keys the model has with their shapes, for
    ``load_state_dict(strict=False)``; the report).

    Example::

        from d2seg.checkpoint.detectron2 import map_detectron2_state_dict
        mapped, report = map_detectron2_state_dict({"res2_0_branch2a_w": w}, model)
        print(report.summary())
    """
    if is_caffe2_state_dict(state_dict):
        renames = convert_caffe2_names(list(state_dict))
        state_dict = {renames[k]: v for k, v in state_dict.items()}
        from d2seg.modeling.backbone.stem import check_weights_layout

        check_weights_layout(model, "msra")
    own = model.state_dict()
    trunks = _trunk_prefixes(model)
    report = MappingReport()
    mapped: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        bare = name[len("backbone.bottom_up."):] if name.startswith("backbone.bottom_up.") else name
        trunk = _trunk_name(bare)
        if trunk is not None:
            targets = [p + trunk for p in trunks]
        else:
            head = _head_name(name, model)
            targets = [head] if head else []
        targets = [t for t in targets if t in own]
        if not targets:
            report.unused.append(name)
            continue
        for target in targets:
            tensor = _background_first(target, value, own[target])
            if tuple(tensor.shape) != tuple(own[target].shape):
                report.skipped.append((target, tuple(tensor.shape), tuple(own[target].shape)))
                continue
            mapped[target] = tensor.to(own[target].dtype)
            report.loaded.append(target)
    report.missing = sorted(k for k in own if k not in mapped and not k.endswith(
        "num_batches_tracked"))
    return mapped, report
