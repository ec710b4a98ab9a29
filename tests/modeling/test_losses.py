"""Semantic losses: cross-entropy and soft dice against torch/torchmetrics, ignore handling."""

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.segmentation import dice_score

from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.modeling.losses import SemSegLoss, cross_entropy_loss, soft_dice_loss

IGNORE = 255


def _batch(num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, max(num_classes, 1), 16, 24, generator=generator)
    targets = torch.randint(0, max(num_classes, 2), (2, 16, 24), generator=generator)
    targets[:, :3] = IGNORE
    return logits, targets


def test_multiclass_cross_entropy_matches_torch_with_weights_and_ignore():
    logits, targets = _batch(4)
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    expected = F.cross_entropy(logits, targets, weight=weights, ignore_index=IGNORE)
    got = cross_entropy_loss(logits, targets, ignore_value=IGNORE, class_weights=weights)
    torch.testing.assert_close(got, expected)


def test_binary_cross_entropy_is_bce_on_labelled_pixels():
    logits, targets = _batch(1)
    valid = targets != IGNORE
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], targets[valid].float())
    torch.testing.assert_close(cross_entropy_loss(logits, targets, ignore_value=IGNORE), expected)


def test_dice_hand_computed_value():
    # Two pixels with (background, foreground) probabilities (0.2, 0.8) and (0.6, 0.4);
    # their labels are foreground, background.
    probs = torch.tensor([[0.2, 0.6], [0.8, 0.4]])  # classes × pixels
    logits = probs.log().view(1, 2, 1, 2)
    targets = torch.tensor([[[1, 0]]])
    dice_bg = 2 * 0.6 / (0.2 + 0.6 + 1)
    dice_fg = 2 * 0.8 / (0.8 + 0.4 + 1)
    expected = 1 - (dice_bg + dice_fg) / 2
    got = soft_dice_loss(logits, targets, smooth=0.0)
    torch.testing.assert_close(got, torch.tensor(expected))


@pytest.mark.parametrize("num_classes", [1, 3])
def test_dice_of_confident_predictions_matches_torchmetrics(num_classes):
    generator = torch.Generator().manual_seed(1)
    labels = max(num_classes, 2)
    predicted = torch.randint(0, labels, (2, 20, 20), generator=generator)
    targets = torch.randint(0, labels, (2, 20, 20), generator=generator)
    if num_classes == 1:
        logits = (predicted.float() * 2 - 1).unsqueeze(1) * 50
    else:
        logits = F.one_hot(predicted, labels).permute(0, 3, 1, 2).float() * 50
    per_class = dice_score(
        predicted, targets, num_classes=labels, average="none", input_format="index",
        aggregation_level="global",
    ).flatten()
    # Binary dice scores the foreground only; multi-class averages every class.
    expected = 1 - (per_class[1] if num_classes == 1 else per_class.mean())
    got = soft_dice_loss(logits, targets, smooth=0.0)
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss_fn", [soft_dice_loss, cross_entropy_loss])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_ignored_pixels_do_not_affect_loss_or_gradient(loss_fn, num_classes):
    logits, targets = _batch(num_classes)
    logits.requires_grad_(True)
    loss = loss_fn(logits, targets, ignore_value=IGNORE)
    loss.backward()
    assert torch.all(logits.grad[:, :, :3] == 0)
    changed = logits.detach().clone()
    changed[:, :, :3] = 100.0
    torch.testing.assert_close(loss_fn(changed, targets, ignore_value=IGNORE), loss.detach())


@pytest.mark.parametrize("num_classes", [1, 3])
def test_all_ignored_batch_gives_zero_not_nan(num_classes):
    logits, targets = _batch(num_classes)
    targets.fill_(IGNORE)
    loss = SemSegLoss(num_classes=num_classes, loss="ce+dice")(logits, targets)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0)


def test_ce_plus_dice_mixes_with_config_weights():
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.SEM_SEG_HEAD.LOSS = "ce+dice"
    cfg.MODEL.SEM_SEG_HEAD.CE_WEIGHT = 0.25
    cfg.MODEL.SEM_SEG_HEAD.DICE_WEIGHT = 2.0
    cfg.MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS = [1.0, 2.0, 3.0]
    cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 0.5
    logits, targets = _batch(3)
    weights = torch.tensor([1.0, 2.0, 3.0])
    expected = 0.5 * (
        0.25 * F.cross_entropy(logits, targets, weight=weights, ignore_index=IGNORE)
        + 2.0 * soft_dice_loss(logits, targets, class_weights=weights)
    )
    torch.testing.assert_close(SemSegLoss(**SemSegLoss.from_config(cfg))(logits, targets), expected)


def test_binary_ce_plus_dice_is_bce_plus_dice():
    logits, targets = _batch(1)
    expected = cross_entropy_loss(logits, targets) + soft_dice_loss(logits, targets)
    torch.testing.assert_close(SemSegLoss(num_classes=1, loss="ce+dice")(logits, targets), expected)
    torch.testing.assert_close(
        SemSegLoss(num_classes=1, loss="bce")(logits, targets), cross_entropy_loss(logits, targets)
    )


def test_user_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match="NUM_CLASSES 1"):
        SemSegLoss(num_classes=3, loss="bce")
    with pytest.raises(ConfigError, match="CLASS_WEIGHTS"):
        SemSegLoss(num_classes=3, class_weights=[1.0, 2.0])
    logits, targets = _batch(1)
    targets[0, 5, 5] = 7
    with pytest.raises(ConfigError, match="label 7 .*NUM_CLASSES"):
        SemSegLoss(num_classes=1)(logits, targets)
