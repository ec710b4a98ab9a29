"""Detectron2 features d2seg does not implement: their keys exist, their non-defaults are refused.

A Detectron2 config file must never fail with "unknown key". Every key of Detectron2's tree is
in :mod:`d2seg.config.defaults`; the keys of a feature d2seg lacks are listed here, in the one
table :data:`UNSUPPORTED`, and :func:`check_supported` (called by ``validate_cfg``) refuses a
config that sets one of them to anything but its default (or that names an unimplemented
Detectron2 class) with ``not supported in d2seg: <feature> (<key>); fix: ...``.

Code that finds an unsupported combination elsewhere raises :func:`unsupported_error` so that
every such refusal reads the same.

Example::

    from d2seg.config import get_cfg, validate_cfg
    from d2seg.errors import ConfigError

    cfg = get_cfg()
    cfg.MODEL.KEYPOINT_ON = True
    try:
        validate_cfg(cfg)
    except ConfigError as e:
        assert str(e).startswith("not supported in d2seg: Keypoint R-CNN (MODEL.KEYPOINT_ON)")
"""

from dataclasses import dataclass
from typing import Any

from d2seg.errors import ConfigError


@dataclass(frozen=True)
class Unsupported:
    """One refused key (or every key under a ``prefix.``) of a feature d2seg lacks.

    ``refused`` empty: any value other than the default is refused. ``refused`` given: only
    those values are (a class name Detectron2 registers and d2seg does not).
    """

    key: str
    feature: str
    fix: str
    refused: tuple[Any, ...] = ()


_KEEP = "remove the key (or set it to its default {default!r})"

UNSUPPORTED: tuple[Unsupported, ...] = (
    Unsupported("MODEL.KEYPOINT_ON", "Keypoint R-CNN", "set MODEL.KEYPOINT_ON False"),
    Unsupported("MODEL.ROI_KEYPOINT_HEAD.", "Keypoint R-CNN", _KEEP),
    Unsupported("TEST.KEYPOINT_OKS_SIGMAS", "Keypoint R-CNN", _KEEP),
    Unsupported(
        "MODEL.META_ARCHITECTURE", "RetinaNet", "use GeneralizedRCNN", refused=("RetinaNet",)
    ),
    Unsupported("MODEL.RETINANET.", "RetinaNet", _KEEP),
    Unsupported(
        "MODEL.META_ARCHITECTURE",
        "RPN-only models (ProposalNetwork)",
        "use GeneralizedRCNN",
        refused=("ProposalNetwork",),
    ),
    Unsupported(
        "MODEL.META_ARCHITECTURE",
        "Rotated Faster R-CNN",
        "use GeneralizedRCNN",
        refused=("RotatedRCNN",),
    ),
    Unsupported("MODEL.LOAD_PROPOSALS", "precomputed proposals", "set it False (the RPN runs)"),
    Unsupported("DATASETS.PROPOSAL_FILES_TRAIN", "precomputed proposals", _KEEP),
    Unsupported("DATASETS.PROPOSAL_FILES_TEST", "precomputed proposals", _KEEP),
    Unsupported("DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN", "precomputed proposals", _KEEP),
    Unsupported("DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST", "precomputed proposals", _KEEP),
    Unsupported(
        "MODEL.PROPOSAL_GENERATOR.NAME", "proposal generators other than RPN", "use 'RPN'"
    ),
    Unsupported(
        "MODEL.ANCHOR_GENERATOR.NAME", "rotated anchors", "use 'DefaultAnchorGenerator'"
    ),
    Unsupported(
        "MODEL.ANCHOR_GENERATOR.OFFSET",
        "anchor centre offsets (torchvision's anchors start at 0)",
        "set it 0.0",
    ),
    Unsupported("MODEL.RPN.HEAD_NAME", "RPN heads other than StandardRPNHead", _KEEP),
    Unsupported(
        "MODEL.RPN.BOUNDARY_THRESH", "dropping anchors that cross the image border", "set it -1"
    ),
    Unsupported("MODEL.RPN.IOU_LABELS", "other RPN anchor labels", _KEEP),
    Unsupported("MODEL.ROI_HEADS.IOU_LABELS", "other RoI proposal labels", _KEEP),
    Unsupported(
        "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT",
        "training without the ground truth among the proposals",
        "set it True",
    ),
    Unsupported(
        "MODEL.ROI_HEADS.NAME", "Rotated R-CNN", "use StandardROIHeads", refused=("RROIHeads",)
    ),
    Unsupported("MODEL.ROI_BOX_HEAD.USE_FED_LOSS", "federated loss (LVIS)", "set it False"),
    Unsupported("MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", "sigmoid box classifier", "set it False"),
    Unsupported("MODEL.FPN.FUSE_TYPE", "FPN average fusion", "set it 'sum'"),
    Unsupported(
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE",
        "RoIPool and rotated RoIAlign",
        "use 'ROIAlignV2' (or 'ROIAlign')",
        refused=("ROIPool", "ROIAlignRotated"),
    ),
    Unsupported(
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE",
        "RoIPool and rotated RoIAlign",
        "use 'ROIAlignV2' (or 'ROIAlign')",
        refused=("ROIPool", "ROIAlignRotated"),
    ),
    Unsupported("DATALOADER.REPEAT_SQRT", "linear repeat factors", "set it True"),
    Unsupported("SOLVER.NUM_DECAYS", "WarmupStepWithFixedGammaLR", _KEEP),
    Unsupported("SOLVER.RESCALE_INTERVAL", "WarmupStepWithFixedGammaLR", _KEEP),
    Unsupported("TEST.AUG.", "test-time augmentation", _KEEP),
    Unsupported("VIS_PERIOD", "training-time visualisation", "set it 0"),
    Unsupported(
        "FLOAT32_PRECISION", "FLOAT32_PRECISION", "set it '' (PyTorch's default precision)"
    ),
)

# d2seg defaults that differ from Detectron2's, and why (every other key has its default).
D2SEG_DEFAULTS: dict[str, str] = {
    "MODEL.DEVICE": (
        "'auto' picks cuda when a GPU is visible, else cpu; Detectron2's 'cuda' fails on a "
        "machine without one"
    ),
}


def unsupported_error(feature: str, key: str, fix: str) -> ConfigError:
    """The error for a Detectron2 feature d2seg lacks, as every refusal words it."""
    return ConfigError(f"not supported in d2seg: {feature} ({key}); fix: {fix}")


def check_supported(cfg: Any, defaults: Any) -> None:
    """Raise :func:`unsupported_error` for the first key of :data:`UNSUPPORTED` that ``cfg``
    sets to a refused value (``defaults``: the default tree, ``get_cfg()``)."""
    from d2seg.config.config import get_key

    keys = cfg.all_keys()
    for entry in UNSUPPORTED:
        matching = [k for k in keys if k.startswith(entry.key)] if entry.key.endswith(".") else [
            entry.key
        ]
        for key in matching:
            value, default = get_key(cfg, key), get_key(defaults, key)
            refused = value in entry.refused if entry.refused else _differs(value, default)
            if refused:
                fix = entry.fix.format(default=default)
                raise unsupported_error(entry.feature, key, f"{fix} (it is {value!r})")


def _differs(value: Any, default: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return len(value) != len(default) or any(_differs(a, b) for a, b in zip(value, default))
    return value != default
