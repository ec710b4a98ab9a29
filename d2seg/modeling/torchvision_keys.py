"""torchvision Mask R-CNN state-dict keys → GeneralizedRCNN's.

GeneralizedRCNN is built from torchvision's parts, so a ``maskrcnn_resnet50_fpn`` state dict
fits it once four names are translated: the trunk (``backbone.body`` → ``backbone.bottom_up``),
the box head's two fully connected layers (``fc6``/``fc7`` → the Linear layers of
torchvision's ``FastRCNNConvFCHead``), the mask head's convs (``mask_head.<i>`` →
``mask_head.convs.<i>``) and the mask predictor (``mask_predictor`` →
``mask_head.predictor``). FPN and RPN keys are the same in both.
"""

import re

from torch import Tensor, nn

from d2seg.modeling.backbone.stem import check_weights_layout

_TRUNK = ("backbone.body.", "backbone.bottom_up.")
_MASK_PREDICTOR = ("roi_heads.mask_predictor.", "roi_heads.mask_head.predictor.")
_MASK_CONV = re.compile(r"^roi_heads\.mask_head\.(\d+)\.")
_BOX_FC = re.compile(r"^roi_heads\.box_head\.(fc6|fc7)\.")


def map_torchvision_maskrcnn_keys(
    state_dict: dict[str, Tensor], model: nn.Module
) -> dict[str, Tensor]:
    """A torchvision Mask R-CNN state dict keyed like ``model`` (a GeneralizedRCNN).

    Tensors keep their shapes; a predictor whose class count differs from
    ``ROI_HEADS.NUM_CLASSES`` + 1 is left for the checkpointer to skip with its shape warning.
    BatchNorm's ``num_batches_tracked`` counters are dropped where the model's trunk has frozen
    BatchNorm (no counter). Returns a new dict; a state dict without torchvision's
    ``backbone.body.*`` keys (e.g. a d2seg checkpoint) is returned as is.
    """
    if not any(key.startswith(_TRUNK[0]) for key in state_dict):
        return state_dict
    check_weights_layout(model, "torchvision")
    box_fcs = [n for n, m in model.roi_heads.box_head.named_children() if isinstance(m, nn.Linear)]
    fc_names = dict(zip(("fc6", "fc7"), box_fcs))
    own_keys = model.state_dict().keys()
    mapped = {}
    for key, value in state_dict.items():
        for old, new in (_TRUNK, _MASK_PREDICTOR):
            if key.startswith(old):
                key = new + key[len(old):]
        key = _MASK_CONV.sub(r"roi_heads.mask_head.convs.\1.", key)
        key = _BOX_FC.sub(lambda m: f"roi_heads.box_head.{fc_names.get(m[1], m[1])}.", key)
        if key.endswith("num_batches_tracked") and key not in own_keys:
            continue
        mapped[key] = value
    return mapped


_SEGMENTATION_HEAD = ("classifier.", "sem_seg_head.classifier.")
_SEGMENTATION_AUX = "aux_classifier."


def map_torchvision_segmentation_keys(
    state_dict: dict[str, Tensor], model: nn.Module
) -> dict[str, Tensor]:
    """A torchvision semantic segmentation state dict (``fcn_resnet50``,
    ``lraspp_mobilenet_v3_large``, ...) keyed like ``model`` (a SemanticSegmentor).

    torchvision keeps the trunk under ``backbone.`` with the classification network's names
    (``backbone.layer1...``; for MobileNetV3 the ``features`` indices, ``backbone.0...``) and the
    head under ``classifier.``; d2seg's heads name torchvision's head module ``classifier`` too.
    The auxiliary head (``aux_classifier.*``) is dropped. A state dict without top-level
    ``classifier.*`` keys, or a model that has them itself, is returned as is.
    """
    own_keys = model.state_dict().keys()
    if not any(k.startswith(_SEGMENTATION_HEAD[0]) for k in state_dict) or any(
        k.startswith(_SEGMENTATION_HEAD[0]) for k in own_keys
    ):
        return state_dict
    check_weights_layout(model, "torchvision")
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith(_SEGMENTATION_AUX):
            continue
        if key.startswith(_SEGMENTATION_HEAD[0]):
            key = _SEGMENTATION_HEAD[1] + key[len(_SEGMENTATION_HEAD[0]):]
        elif key not in own_keys and key.startswith("backbone."):
            key = "backbone.features." + key[len("backbone."):]
        mapped[key] = value
    return mapped
