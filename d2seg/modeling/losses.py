"""Semantic segmentation losses: cross-entropy, soft dice, and their mix, ignore-aware.

Logits are N×K×H×W. K = ``NUM_CLASSES`` ≥ 2 means softmax over K classes (label 0 is usually
the background); K = 1 means binary segmentation with one sigmoid logit per pixel (label 1 =
foreground, 0 = background). Targets are N×H×W integer labels; pixels equal to ``ignore_value``
(255: unlabelled pixels and the padding added to batch images) count in no loss term.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2seg.config import CfgNode
from d2seg.errors import ConfigError

LOSS_KINDS = ("ce", "bce", "dice", "ce+dice")


def _valid_and_labels(targets: Tensor, ignore_value: int) -> tuple[Tensor, Tensor]:
    """(N×H×W bool mask of labelled pixels, labels with ignored pixels set to 0)."""
    valid = targets != ignore_value
    return valid, torch.where(valid, targets, torch.zeros_like(targets))


def _probabilities_and_one_hot(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class probabilities and one-hot targets, both N×K×H×W (K = 1: foreground only)."""
    if logits.shape[1] == 1:
        return logits.sigmoid(), (labels == 1).unsqueeze(1).to(logits.dtype)
    one_hot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return logits.softmax(dim=1), one_hot


def soft_dice_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_value: int = 255,
    class_weights: Tensor | None = None,
    smooth: float = 1.0,
) -> Tensor:
    """1 − soft dice, averaged over classes; a scalar tensor.

    Per class c, over every labelled pixel of the batch: ``dice_c = (2·Σ p·t + smooth) /
    (Σ p + Σ t + smooth)`` with p the softmax (sigmoid for K = 1) probability and t the one-hot
    target. For K = 1 only the foreground class is scored. ``smooth`` keeps classes absent from
    both the prediction and the batch at dice ≈ 1. ``class_weights`` (K values) weight the
    per-class terms of the mean.

    Args:
        logits: N×K×H×W raw scores.
        targets: N×H×W integer labels in [0, max(K, 2)) or ``ignore_value``.
    """
    valid, labels = _valid_and_labels(targets, ignore_value)
    probs, one_hot = _probabilities_and_one_hot(logits, labels)
    mask = valid.unsqueeze(1).to(logits.dtype)
    probs, one_hot = probs * mask, one_hot * mask
    intersection = (probs * one_hot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    dice = (2 * intersection + smooth) / (total + smooth).clamp(min=torch.finfo(total.dtype).eps)
    if class_weights is None or logits.shape[1] == 1:
        return 1 - dice.mean()
    return ((1 - dice) * class_weights).sum() / class_weights.sum()


def cross_entropy_loss(
    logits: Tensor, targets: Tensor, *, ignore_value: int = 255, class_weights: Tensor | None = None
) -> Tensor:
    """Pixel cross-entropy, averaged over labelled pixels; a scalar tensor.

    K ≥ 2: softmax cross-entropy, equal to ``F.cross_entropy(logits, targets, weight,
    ignore_index=ignore_value)``. K = 1: binary cross-entropy on the sigmoid logit. With
    ``class_weights`` (K values; 2 = [background, foreground] for K = 1) each pixel counts with
    its class's weight and the mean divides by the summed weights. A batch with no labelled
    pixel gives 0 (not NaN).
    """
    valid, labels = _valid_and_labels(targets, ignore_value)
    if logits.shape[1] == 1:
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0], (labels == 1).to(logits.dtype), reduction="none"
        )
    else:
        per_pixel = F.cross_entropy(logits, labels, reduction="none")
    weight = valid.to(logits.dtype)
    if class_weights is not None:
        weight = weight * class_weights[labels]
    return (per_pixel * weight).sum() / weight.sum().clamp(min=torch.finfo(weight.dtype).eps)


class SemSegLoss(nn.Module):
    """``MODEL.SEM_SEG_HEAD.LOSS``: "ce", "bce", "dice" or "ce+dice", times ``LOSS_WEIGHT``.

    "ce" is softmax cross-entropy for NUM_CLASSES ≥ 2 and binary cross-entropy for
    NUM_CLASSES = 1, so "ce+dice" on a binary model is BCE + dice. "bce" states the binary case
    explicitly and needs NUM_CLASSES = 1. "ce+dice" = CE_WEIGHT·CE + DICE_WEIGHT·dice.
    ``CLASS_WEIGHTS`` weight the CE pixels and the dice classes.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        loss: str = "ce",
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        class_weights: Sequence[float] = (),
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        if loss not in LOSS_KINDS:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.LOSS = {loss!r}; fix: use one of {list(LOSS_KINDS)}"
            )
        if loss == "bce" and num_classes != 1:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.LOSS 'bce' needs MODEL.SEM_SEG_HEAD.NUM_CLASSES 1 (binary), "
                f"got {num_classes}; fix: set NUM_CLASSES 1, or LOSS 'ce' for {num_classes} classes"
            )
        num_labels = max(num_classes, 2)
        if class_weights and len(class_weights) != num_labels:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS has {len(class_weights)} values for "
                f"{num_labels} labels; fix: give one weight per label (background first; "
                f"[background, foreground] when NUM_CLASSES is 1), or [] for uniform weights"
            )
        self.num_classes = num_classes
        self.num_labels = num_labels
        self.loss = loss
        # The single-term losses ignore CE_WEIGHT/DICE_WEIGHT: those only mix "ce+dice".
        self.ce_weight = {"ce": 1.0, "bce": 1.0, "dice": 0.0, "ce+dice": ce_weight}[loss]
        self.dice_weight = {"ce": 0.0, "bce": 0.0, "dice": 1.0, "ce+dice": dice_weight}[loss]
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "num_classes": head.NUM_CLASSES,
            "loss": head.LOSS,
            "ce_weight": head.CE_WEIGHT,
            "dice_weight": head.DICE_WEIGHT,
            "class_weights": list(head.CLASS_WEIGHTS),
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
        }

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``logits`` N×K×H×W, ``targets`` N×H×W long → the weighted loss (scalar)."""
        self._check_labels(targets)
        total = logits.new_zeros(())
        if self.ce_weight:
            total = total + self.ce_weight * cross_entropy_loss(
                logits, targets, ignore_value=self.ignore_value, class_weights=self.class_weights
            )
        if self.dice_weight:
            total = total + self.dice_weight * soft_dice_loss(
                logits, targets, ignore_value=self.ignore_value, class_weights=self.class_weights
            )
        return self.loss_weight * total

    def _check_labels(self, targets: Tensor) -> None:
        labelled = targets[targets != self.ignore_value]
        bad = labelled[(labelled < 0) | (labelled >= self.num_labels)]
        if bad.numel():
            raise ConfigError(
                f"ground-truth label {int(bad[0])} does not fit MODEL.SEM_SEG_HEAD.NUM_CLASSES = "
                f"{self.num_classes} (labels 0..{self.num_labels - 1}, {self.ignore_value} = "
                f"ignore); fix: set NUM_CLASSES to the number of classes including the background"
            )
