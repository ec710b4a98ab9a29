"""PointRend: point sampling, training-point selection, subdivision inference.

Training PointRend end to end: tests/modeling/test_rcnn.py (overfitting two images).
"""

from pathlib import Path

import pytest
import torch
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.modeling import build_model
from d2seg.modeling.heads.point_rend import (
    CoarseMaskHead,
    PointRendMaskHead,
    StandardPointHead,
    point_sample,
    regular_grid_points,
    sample_mask_point_labels,
    uncertain_grid_cells,
    uncertain_points_with_randomness,
)
from d2seg.modeling.postprocess import detector_postprocess

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TINY_CONFIG = CONFIG_DIR / "tiny" / "pointrend_R_18_tiny.yaml"


def test_point_sample_at_cell_centres_returns_the_cells():
    features = torch.randn(2, 3, 5, 7)
    points = torch.stack(
        [
            torch.stack([(x + 0.5) / 7, (y + 0.5) / 5])
            for y in torch.arange(5.0)
            for x in torch.arange(7.0)
        ]
    ).expand(2, -1, -1)
    sampled = point_sample(features, points)
    torch.testing.assert_close(sampled, features.flatten(2))


def test_regular_grid_points_are_row_major_cell_centres():
    grid = regular_grid_points(4, num_boxes=3, device=torch.device("cpu"))
    assert grid.shape == (3, 16, 2)
    torch.testing.assert_close(grid[0, 1], torch.tensor([0.375, 0.125]))  # row 0, column 1
    torch.testing.assert_close(grid[0, 4], torch.tensor([0.125, 0.375]))  # row 1, column 0


def test_training_points_favour_uncertain_regions():
    # Logits are ±10 except a vertical band (x in [0.5, 0.625)) where they are 0.
    logits = torch.full((4, 1, 8, 8), 10.0)
    logits[..., :4] = -10.0
    logits[..., 4] = 0.0
    torch.manual_seed(0)
    points = uncertain_points_with_randomness(logits, 100, 3, 0.75)
    assert points.shape == (4, 100, 2)
    assert points.min() >= 0 and points.max() <= 1
    # 75 points are the most uncertain of 300 random candidates, 25 are uniform.
    confidence = point_sample(logits, points).abs()[:, 0]
    assert confidence[:, :75].mean() < 0.6 * confidence[:, 75:].mean()
    # Bilinear sampling spreads the band over x in ~[0.44, 0.69] (27% of a uniform draw); the
    # zero padding of grid_sample (as in Detectron2) makes the box border uncertain too.
    in_band = (points[:, :75, 0] > 0.43) & (points[:, :75, 0] < 0.7)
    assert in_band.float().mean() > 0.55


def test_uncertain_grid_cells_pick_logits_closest_to_zero():
    logits = torch.tensor([[[[5.0, -0.1], [0.2, -3.0]]]])
    indices, points = uncertain_grid_cells(logits, 2)
    assert indices.tolist() == [[1, 2]]
    torch.testing.assert_close(points[0], torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    all_indices, _ = uncertain_grid_cells(logits, 100)
    assert all_indices.shape == (1, 4)


def test_point_labels_are_read_from_the_matched_ground_truth_mask():
    masks = torch.zeros(2, 40, 40, dtype=torch.uint8)
    masks[0, 10:20, 10:20] = 1
    masks[1, 20:40, 0:40] = 1
    boxes = [torch.tensor([[10.0, 10, 30, 30], [0, 0, 40, 40]])]
    points = torch.tensor([[[0.25, 0.25], [0.75, 0.75]], [[0.5, 0.25], [0.5, 0.75]]])
    labels = sample_mask_point_labels([masks], [torch.tensor([0, 1])], boxes, points)
    # Box 0 ↔ mask 0: (15, 15) inside, (25, 25) outside; box 1 ↔ mask 1: (20, 10) above the
    # band, (20, 30) inside it.
    torch.testing.assert_close(labels, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def _disc_head(subdivision_steps: int) -> PointRendMaskHead:
    """A PointRend head whose point head reads a signed-distance feature (logit = 2·sdf)."""
    torch.manual_seed(0)
    point_head = StandardPointHead(
        fine_grained_channels=1, num_mask_channels=2, fc_dim=8, num_fc=0,
        coarse_pred_each_layer=False,
    )
    with torch.no_grad():
        point_head.predictor.weight.zero_()
        point_head.predictor.weight[:, 0, 0] = 2.0
    coarse_head = CoarseMaskHead(
        in_channels=1, input_side=14, conv_dim=4, fc_dim=8, num_fc=1, output_side=7,
        num_mask_channels=2,
    )
    return PointRendMaskHead(
        coarse_in_features=["p2"], point_in_features=["p2"], feature_strides={"p2": 4},
        coarse_pooler_side=14, coarse_head=coarse_head, point_head=point_head,
        train_num_points=196, oversample_ratio=3, importance_sample_ratio=0.75,
        subdivision_steps=subdivision_steps, subdivision_num_points=784,
    ).eval()


def _disc(size: int, scale: float, centre: float, radius: float) -> torch.Tensor:
    """Pixels (of a ``size``² image at ``scale``× the 128 px frame) whose centre is in the disc."""
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / scale
    return (coords[None] - centre) ** 2 + (coords[:, None] - centre) ** 2 <= radius**2


def test_subdivision_traces_a_disc_boundary_better_than_a_28x28_mask():
    """Same box, same features: PointRend's 224² subdivision vs. 28² masks, at 4× resolution.

    The fine-grained map (p2, stride 4) holds the signed distance to a circle, and the point
    head turns it into logits. Baselines: (a) the same head stopped at 28² (identical coarse
    and point predictions, no subdivision past 28²); (b) the best any standard 28² head can do,
    its own training target (the ground-truth disc RoI-aligned into 28² cells, torchvision's
    ``project_masks_on_boxes``).
    """
    centre, radius, out = 64.0, 44.0, 512
    cells = (torch.arange(32, dtype=torch.float32) + 0.5) * 4
    sdf = radius - torch.sqrt((cells[None] - centre) ** 2 + (cells[:, None] - centre) ** 2)
    features = {"p2": sdf[None, None]}
    box = torch.tensor([[centre - radius, centre - radius, centre + radius, centre + radius]])
    labels = [torch.tensor([1])]
    truth = _disc(out, out / 128, centre, radius)

    def iou_at_output(probabilities: torch.Tensor) -> float:
        result = {"boxes": box, "scores": torch.ones(1), "labels": labels[0]}
        result["masks"] = probabilities
        mask = detector_postprocess(result, (128, 128), out, out)["masks"][0]
        return float((mask & truth).sum() / (mask | truth).sum())

    with torch.no_grad():
        refined = _disc_head(5).predict(features, [box], [(128, 128)], labels)[0]
        at_28 = _disc_head(2).predict(features, [box], [(128, 128)], labels)[0]
    gt_mask = _disc(128, 1.0, centre, radius)[None].to(torch.uint8)
    ideal_28 = project_masks_on_boxes(gt_mask, box, torch.tensor([0]), 28)[:, None]

    assert refined.shape == (1, 1, 224, 224) and at_28.shape == (1, 1, 28, 28)
    iou_refined, iou_28, iou_ideal_28 = map(iou_at_output, (refined, at_28, ideal_28))
    assert iou_refined > 0.995
    assert iou_refined > iou_28 + 0.003
    assert iou_refined > iou_ideal_28 + 0.01


def test_point_head_num_classes_must_match_roi_heads():
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 5
    with pytest.raises(ConfigError, match="POINT_HEAD.NUM_CLASSES"):
        build_model(cfg)


def test_pointrend_trains_with_a_point_loss():
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY_CONFIG))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    masks = _disc(64, 1.0, 32.0, 20.0)[None].to(torch.uint8)
    instances = {"boxes": torch.tensor([[12.0, 12, 52, 52]]), "classes": torch.tensor([1]),
                 "masks": masks}
    losses = model([{"image": torch.full((3, 64, 64), 128, dtype=torch.uint8),
                     "instances": instances}])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
                           "loss_mask", "loss_mask_point"}
    sum(losses.values()).backward()
    assert model.roi_heads.mask_head.point_head.predictor.weight.grad.abs().sum() > 0


def test_detectron2_layout_foreground_channels_and_initialisation():
    """As Detectron2's PointRend: NUM_CLASSES coarse channels (no background), so the point MLP
    takes fine-grained channels + NUM_CLASSES inputs (256 + 80 = 336 for COCO), and the coarse
    head's FCs start from c2_xavier_fill (zero bias, uniform bound sqrt(3 / fan_in))."""
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", 80, "MODEL.POINT_HEAD.NUM_CLASSES", 80,
                         "MODEL.FPN.OUT_CHANNELS", 256, "MODEL.POINT_HEAD.FC_DIM", 256])
    head = build_model(cfg).roi_heads.mask_head
    assert head.point_head.fc_layers[0].in_channels == 336
    assert head.point_head.predictor.out_channels == 80
    assert head.coarse_head.predictor.out_features == 80 * 7 * 7
    for fc in [m for m in head.coarse_head.layers if isinstance(m, torch.nn.Linear)]:
        fan_in = fc.in_features
        assert not fc.bias.any()
        assert fc.weight.abs().max() <= (3 / fan_in) ** 0.5
        assert fc.weight.abs().max() > (1 / fan_in) ** 0.5  # beyond PyTorch's default bound
