"""CascadeROIHeads (Cascade R-CNN): stage losses, refined boxes between stages, averaged scores."""

import math

import pytest
import torch

from d2seg.errors import ConfigError
from d2seg.modeling import build_model
from d2seg.modeling.roi_heads import CascadeROIHeads

from .test_rcnn import RCNN_LOSSES, balloon_inputs, tiny_cfg

CASCADE = ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
           "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True]
STAGE_LOSSES = {f"{name}_stage{k}" for name in ("loss_cls", "loss_box_reg") for k in range(3)}


def cascade_model(*overrides):
    torch.manual_seed(0)
    return build_model(tiny_cfg(*CASCADE, *overrides))


def boxes_seen_by_each_stage(model, inputs) -> list[list[torch.Tensor]]:
    """The boxes the RoI pooler is given, call by call (one call per stage), at inference."""
    seen = []
    hook = model.roi_heads.box_roi_pool.register_forward_pre_hook(
        lambda module, args: seen.append([b.clone() for b in args[1]])
    )
    with torch.no_grad():
        outputs = model(inputs)
    hook.remove()
    return seen, outputs


def test_cascade_trains_every_stage_and_its_loss_falls():
    model = cascade_model()
    assert isinstance(model.roi_heads, CascadeROIHeads) and model.roi_heads.num_stages == 3
    inputs = balloon_inputs(2, 96)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for step in range(8):
        losses = model(inputs)
        assert set(losses) == (RCNN_LOSSES - {"loss_cls", "loss_box_reg"}) | STAGE_LOSSES | {
            "loss_mask"}
        assert all(torch.isfinite(v) for v in losses.values()), losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        if step == 0:
            for head in model.roi_heads.box_head:
                assert all(p.grad is not None and p.grad.abs().sum() > 0
                           for p in head.parameters())
        optimizer.step()
        totals.append(float(sum(losses.values()).detach()))
    assert totals[-1] < 0.6 * totals[0], totals


def test_each_stage_scores_the_boxes_the_stage_before_refined():
    """Stage 0 predicts deltas that double every box about its centre; stage 1 must pool
    exactly those boxes (clipped to the image), stage 2 the same boxes again (zero deltas)."""
    model = cascade_model("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0).eval()
    weights = model.roi_heads.stage_coders[0].weights
    with torch.no_grad():
        for predictor in model.roi_heads.box_predictor:
            predictor.bbox_pred.weight.zero_()
            predictor.bbox_pred.bias.zero_()
        model.roi_heads.box_predictor[0].bbox_pred.bias[2:] = torch.tensor(
            [weights[2] * math.log(2), weights[3] * math.log(2)])
    image = balloon_inputs(1, 96)[0]["image"]
    seen, _ = boxes_seen_by_each_stage(model, [{"image": image}])
    assert len(seen) == 3
    proposals, stage1, stage2 = seen[0][0], seen[1][0], seen[2][0]
    centre, size = (proposals[:, :2] + proposals[:, 2:]) / 2, proposals[:, 2:] - proposals[:, :2]
    doubled = torch.cat([centre - size, centre + size], dim=1).clamp(min=0, max=96)
    torch.testing.assert_close(stage1, doubled, atol=1e-3, rtol=0)
    torch.testing.assert_close(stage2, stage1, atol=1e-3, rtol=0)


def test_later_stages_label_their_boxes_at_their_own_iou():
    """IOUS (0.5, 0.6, 0.7): a box at IoU 0.67 with the ground truth is foreground for stage 1
    and background for stage 2; empty boxes are dropped; the ground-truth box itself has zero
    regression targets."""
    heads = cascade_model().roi_heads
    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    shifted = [gt + torch.tensor([d, 0.0, d, 0.0]) for d in (6.0, 4.0, 3.0)]  # IoU .54 .67 .74
    boxes = torch.cat([gt, *shifted, torch.tensor([[5.0, 5.0, 5.0, 9.0]])])
    target = {"boxes": gt, "labels": torch.tensor([2])}
    for stage, expected in ((1, [2, 0, 2, 2]), (2, [2, 0, 0, 2])):
        kept, labels, deltas = heads.stage_training_samples([boxes], [target], stage)
        assert torch.equal(kept[0], boxes[:4])
        assert labels[0].tolist() == expected
        assert not deltas[0][0].any()


def test_scores_are_the_class_probabilities_averaged_over_stages():
    model = cascade_model("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0).eval()
    biases = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 3.0, 1.0]])
    with torch.no_grad():
        for predictor, bias in zip(model.roi_heads.box_predictor, biases):
            predictor.cls_score.weight.zero_()
            predictor.cls_score.bias.copy_(bias)
    expected = biases.softmax(dim=1).mean(dim=0)  # background, class 0, class 1
    image = balloon_inputs(1, 96)[0]["image"]
    with torch.no_grad():
        (output,) = model([{"image": image, "height": 96, "width": 96}])
    instances = output["instances"]
    assert len(instances["scores"]) > 0
    assert instances["masks"].shape == (len(instances["scores"]), 96, 96)
    torch.testing.assert_close(instances["scores"], expected[1:][instances["classes"]])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False], "CLS_AGNOSTIC_BBOX_REG"),
        (["MODEL.ROI_BOX_CASCADE_HEAD.IOUS", [0.5, 0.6]], "BBOX_REG_WEIGHTS"),
        (["MODEL.ROI_BOX_CASCADE_HEAD.IOUS", [0.4, 0.6, 0.7]], "IOU_THRESHOLDS"),
    ],
)
def test_cascade_settings_detectron2_refuses_are_config_errors(overrides, key):
    with pytest.raises(ConfigError, match=key):
        cascade_model(*overrides)
