"""PointRend: point sampling, training-point selection, subdivision inference; the instance
head, the semantic head (PointRendSemSegHead) and Implicit PointRend.

Training PointRend end to end: tests/modeling/test_rcnn.py (overfitting two images).
"""

import json
import math
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.modeling import build_model
from d2seg.modeling.heads.implicit_point_rend import ImplicitPointHead, ImplicitPointRendMaskHead
from d2seg.modeling.heads.point_rend import (
    CoarseMaskHead,
    PointRendMaskHead,
    StandardPointHead,
    class_margin_uncertainty,
    point_sample,
    regular_grid_points,
    sample_mask_point_labels,
    subdivide,
    uncertain_grid_cells,
    uncertain_points_with_randomness,
)
from d2seg.modeling.postprocess import detector_postprocess

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TINY_CONFIG = CONFIG_DIR / "tiny" / "pointrend_R_18_tiny.yaml"
SEMANTIC_CONFIG = CONFIG_DIR / "tiny" / "pointrend_semantic_R_18_tiny.yaml"
IMPLICIT_CONFIG = CONFIG_DIR / "tiny" / "implicit_pointrend_R_18_tiny.yaml"


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
        in_channels=1, input_side=14, conv_dim=4, fc_dim=8, num_fc=1, output_shape=(2, 7, 7),
        reduce_stride=2,
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


def _tiny(config: Path, *extra) -> torch.nn.Module:
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(list(extra))
    torch.manual_seed(0)
    return build_model(cfg)


def _load_detectron2_names(model: torch.nn.Module, names: dict[str, str], tmp_path: Path) -> None:
    """Save random values under Detectron2's names (``{detectron2 name: d2seg name}``) as a
    Detectron2 ``model_final.pth``, load it, and check each value landed on its d2seg name."""
    own = model.state_dict()
    d2 = {theirs: torch.randn_like(own[ours]) for theirs, ours in names.items()}
    torch.save({"model": d2}, tmp_path / "model_final.pth")
    report = D2SegCheckpointer(model).load(str(tmp_path / "model_final.pth"))["detectron2_report"]
    assert sorted(report.loaded) == sorted(names.values()) and not report.unused
    state = model.state_dict()
    for theirs, ours in names.items():
        torch.testing.assert_close(state[ours], d2[theirs], msg=ours)


def test_class_margin_uncertainty_is_highest_where_two_classes_tie():
    logits = torch.tensor([[[[5.0, 1.0, 2.0]], [[0.0, 1.0, 0.0]], [[0.0, -3.0, 1.0]]]])
    torch.testing.assert_close(class_margin_uncertainty(logits),
                               torch.tensor([[[[-5.0, 0.0, -1.0]]]]))
    binary = torch.tensor([[[[3.0, -0.5]]]])
    torch.testing.assert_close(class_margin_uncertainty(binary), -binary.abs())


def test_subdivision_of_class_logits_finds_the_boundary_bilinear_upsampling_misses():
    """Two classes split by a circle on a 64² image; saturated logits known at stride 4. With a
    perfect point head, two subdivision steps re-predict exactly the pixels the ×4 bilinear
    upsampling gets wrong (the class-margin uncertainty finds them)."""
    centre, radius = 30.0, 19.0

    def logits_at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        foreground = 10 * torch.tanh(2 * (radius - torch.hypot(x - centre, y - centre)))
        return torch.stack([-foreground, foreground], dim=1)

    cells = torch.arange(16, dtype=torch.float32) * 4 + 2
    coarse = logits_at(cells[None, :].expand(16, 16)[None], cells[:, None].expand(16, 16)[None])
    pixels = torch.arange(64, dtype=torch.float32) + 0.5
    truth = logits_at(pixels[None, :].expand(64, 64)[None],
                      pixels[:, None].expand(64, 64)[None]).argmax(1)

    def point_logits_at(points: torch.Tensor) -> torch.Tensor:
        return logits_at(points[..., 0] * 64, points[..., 1] * 64)

    refined = subdivide(coarse, 2, 400, point_logits_at, uncertainty_of=class_margin_uncertainty)
    bilinear = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear")
    assert refined.shape == (1, 2, 64, 64)
    wrong_bilinear = int((bilinear.argmax(1) != truth).sum())
    assert wrong_bilinear > 20
    assert int((refined.argmax(1) != truth).sum()) == 0


def _semantic_batch() -> list[dict]:
    image = torch.full((3, 64, 96), 60, dtype=torch.uint8)
    labels = torch.zeros(64, 96, dtype=torch.long)
    image[:, 10:40, 20:60], labels[10:40, 20:60] = 200, 1
    image[0, 45:60, 60:90], labels[45:60, 60:90] = 250, 2
    labels[:, :4] = 255
    return [{"image": image, "sem_seg": labels}]


def test_pointrend_semantic_trains_with_a_point_loss():
    model = _tiny(SEMANTIC_CONFIG).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(6):
        losses = model(_semantic_batch())
        assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    head = model.sem_seg_head
    assert head.point_head.predictor.weight.grad.abs().sum() > 0
    assert head.coarse_sem_seg_head.predictor.weight.grad.abs().sum() > 0
    assert history[-1]["loss_sem_seg_point"] < history[0]["loss_sem_seg_point"]
    assert history[-1]["loss_sem_seg"] < history[0]["loss_sem_seg"]


def test_pointrend_semantic_inference_is_refined_at_the_requested_size():
    model = _tiny(SEMANTIC_CONFIG).eval()
    image = _semantic_batch()[0]["image"]
    with torch.no_grad():
        (output,) = model([{"image": image, "height": 48, "width": 72}])
        features = model.backbone(model.preprocessor([{"image": image}]).tensors)
        refined = model.sem_seg_head.layers(features)
        coarse = model.sem_seg_head.coarse_sem_seg_head.layers(features)
    assert output["sem_seg"].shape == (3, 48, 72)
    assert refined.shape == coarse.shape == (1, 3, 64, 96)
    # The point head replaced some of the coarse head's upsampled logits, not all of them.
    changed = (refined - coarse).abs().amax(1) > 1e-6
    assert 0 < int(changed.sum()) < changed.numel()


def test_pointrend_semantic_subdivision_must_reach_the_input_resolution():
    with pytest.raises(ConfigError, match="SUBDIVISION_STEPS 2"):
        _tiny(SEMANTIC_CONFIG, "MODEL.POINT_HEAD.SUBDIVISION_STEPS", 3)


def test_detectron2_named_pointrend_semantic_weights_load(tmp_path):
    """Detectron2's SemSegFPNHead branches are [conv (norm inside), Upsample]×n; the p4 branch
    (2 convs) and p5 branch (3) show that the k-th conv and its norm land on d2seg's k-th."""
    model = _tiny(SEMANTIC_CONFIG)
    coarse, point = "sem_seg_head.coarse_sem_seg_head.", "sem_seg_head.point_head."
    _load_detectron2_names(model, {
        "backbone.bottom_up.res2.0.conv1.weight": "backbone.bottom_up.layer1.0.conv1.weight",
        "backbone.fpn_lateral2.weight": "backbone.fpn.inner_blocks.0.0.weight",
        coarse + "scale_heads.0.0.weight": coarse + "scale_heads.0.0.weight",
        coarse + "scale_heads.0.0.norm.weight": coarse + "scale_heads.0.1.weight",
        coarse + "scale_heads.2.2.weight": coarse + "scale_heads.2.4.weight",
        coarse + "scale_heads.3.4.norm.bias": coarse + "scale_heads.3.9.bias",
        coarse + "predictor.weight": coarse + "predictor.weight",
        point + "fc1.weight": point + "fc_layers.0.weight",
        point + "fc3.bias": point + "fc_layers.2.bias",
        point + "predictor.weight": point + "predictor.weight",
    }, tmp_path)


def test_implicit_point_head_is_the_mlp_its_parameters_describe():
    """Oracle: one torch.nn MLP per box; its weights (layer by layer) then its biases, flattened
    in Detectron2's order, are the parameters."""
    torch.manual_seed(0)
    head = ImplicitPointHead(fine_grained_channels=5, num_classes=3, fc_dim=4, num_fc=2,
                             image_feature_enabled=True, positional_encoding_enabled=False)
    mlps = [torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
                                torch.nn.ReLU(), torch.nn.Linear(4, 3)) for _ in range(2)]
    linears = [[m for m in mlp if isinstance(m, torch.nn.Linear)] for mlp in mlps]
    parameters = torch.stack([
        torch.cat([l.weight.flatten() for l in box] + [l.bias for l in box]) for box in linears
    ]).detach()
    assert parameters.shape == (2, head.num_params)
    fine = torch.randn(2, 5, 7)
    logits = head(fine, torch.rand(2, 7, 2), parameters)
    with torch.no_grad():
        expected = torch.stack([mlp(f.T).T for mlp, f in zip(mlps, fine)])
    torch.testing.assert_close(logits, expected)


def test_implicit_positional_encoding_travels_with_the_checkpoint():
    """The encoding's random frequencies are a buffer: a loaded head encodes points exactly as
    the saved one (sin² + cos² = 1 per frequency)."""
    def head(seed: int) -> ImplicitPointHead:
        torch.manual_seed(seed)
        return ImplicitPointHead(fine_grained_channels=0, num_classes=1, fc_dim=4, num_fc=1,
                                 image_feature_enabled=False, positional_encoding_enabled=True)

    saved, loaded = head(0), head(1)
    points = torch.rand(3, 10, 2)
    assert not torch.allclose(saved.positional_encoding(points), loaded.positional_encoding(points))
    loaded.load_state_dict(saved.state_dict())
    encoding = loaded.positional_encoding(points)
    torch.testing.assert_close(encoding, saved.positional_encoding(points))
    assert encoding.shape == (3, 256, 10)
    torch.testing.assert_close(encoding[:, :128] ** 2 + encoding[:, 128:] ** 2,
                               torch.ones(3, 128, 10))


def test_implicit_pointrend_trains_with_point_and_l2_losses():
    model = _tiny(IMPLICIT_CONFIG).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    masks = _disc(64, 1.0, 32.0, 20.0)[None].to(torch.uint8)
    instances = {"boxes": torch.tensor([[12.0, 12, 52, 52]]), "classes": torch.tensor([1]),
                 "masks": masks}
    batch = [{"image": torch.full((3, 64, 64), 128, dtype=torch.uint8), "instances": instances}]
    for _ in range(3):
        losses = model(batch)
        assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
                               "loss_mask_point", "loss_l2"}
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["loss_l2"] > 0
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert model.roi_heads.mask_head.parameter_head.predictor.weight.grad.abs().sum() > 0


def test_implicit_pointrend_predicts_224_masks_that_trace_a_disc():
    """A parameter head whose output is fixed (zero weights, the MLP in its bias) describing
    logit = 2·signed distance, read from p2: the 28² grid + 3 subdivision steps (224²) follow
    the circle at 4× the image resolution."""
    point_head = ImplicitPointHead(fine_grained_channels=1, num_classes=2, fc_dim=2, num_fc=2,
                                   image_feature_enabled=True, positional_encoding_enabled=False)
    parameter_head = CoarseMaskHead(in_channels=1, input_side=14, conv_dim=4, fc_dim=8, num_fc=1,
                                    output_shape=(point_head.num_params,), reduce_stride=2)
    mlp = [torch.tensor([[1.0], [-1.0]]), torch.eye(2), torch.tensor([[2.0, -2.0]] * 2)]
    with torch.no_grad():
        parameter_head.predictor.weight.zero_()
        parameter_head.predictor.bias.copy_(
            torch.cat([w.flatten() for w in mlp] + [torch.zeros(2 + 2 + 2)]))
    head = ImplicitPointRendMaskHead(
        pooler_in_features=["p2"], point_in_features=["p2"], feature_strides={"p2": 4},
        pooler_side=14, parameter_head=parameter_head, point_head=point_head,
        params_l2_regularizer=1e-5, train_num_points=196, subdivision_steps=3,
        subdivision_num_points=784,
    ).eval()
    centre, radius, out = 64.0, 44.0, 512
    cells = (torch.arange(32, dtype=torch.float32) + 0.5) * 4
    sdf = radius - torch.sqrt((cells[None] - centre) ** 2 + (cells[:, None] - centre) ** 2)
    box = torch.tensor([[centre - radius, centre - radius, centre + radius, centre + radius]])
    with torch.no_grad():
        (masks,) = head.predict({"p2": sdf[None, None]}, [box], [(128, 128)], [torch.tensor([2])])
    assert masks.shape == (1, 1, 224, 224)
    result = {"boxes": box, "scores": torch.ones(1), "labels": torch.tensor([2]), "masks": masks}
    mask = detector_postprocess(result, (128, 128), out, out)["masks"][0]
    truth = _disc(out, out / 128, centre, radius)
    assert float((mask & truth).sum() / (mask | truth).sum()) > 0.99


def test_implicit_pointrend_model_outputs_masks_at_the_requested_size():
    model = _tiny(IMPLICIT_CONFIG, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0).eval()
    with torch.no_grad():
        (output,) = model([{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),
                            "height": 48, "width": 40}])
    count = len(output["instances"]["scores"])
    assert count > 0
    assert output["instances"]["masks"].shape == (count, 48, 40)


def test_point_heads_are_checked_against_their_mask_head():
    with pytest.raises(ConfigError, match="ImplicitPointRendMaskHead for ImplicitPointHead"):
        _tiny(TINY_CONFIG, "MODEL.POINT_HEAD.NAME", "ImplicitPointHead")
    with pytest.raises(ConfigError, match="fix: ImplicitPointHead"):
        _tiny(IMPLICIT_CONFIG, "MODEL.POINT_HEAD.NAME", "StandardPointHead")


def test_detectron2_named_pointrend_weights_load_with_a_channel_reducing_coarse_head(tmp_path):
    """p2 (32 channels) wider than ROI_MASK_HEAD.CONV_DIM (16): as Detectron2's ConvFCHead, a
    1×1 conv reduces the channels first; old (coarse_mask_fc) and new (fc) names both load."""
    model = _tiny(TINY_CONFIG, "MODEL.ROI_MASK_HEAD.CONV_DIM", 16)
    coarse = model.roi_heads.mask_head.coarse_head
    assert coarse.reduce_channels[0].in_channels == 32 and coarse.reduce.in_channels == 16
    head = "roi_heads.mask_head."
    _load_detectron2_names(model, {
        "proposal_generator.rpn_head.objectness_logits.weight": "rpn.head.cls_logits.weight",
        head + "coarse_head.reduce_channel_dim_conv.weight":
            head + "coarse_head.reduce_channels.0.weight",
        head + "coarse_head.reduce_spatial_dim_conv.bias": head + "coarse_head.reduce.bias",
        head + "coarse_head.coarse_mask_fc1.weight": head + "coarse_head.layers.2.weight",
        head + "coarse_head.fc2.weight": head + "coarse_head.layers.4.weight",
        head + "point_head.fc2.weight": head + "point_head.fc_layers.1.weight",
    }, tmp_path)


def test_detectron2_named_implicit_pointrend_weights_load(tmp_path):
    model = _tiny(IMPLICIT_CONFIG)
    head = "roi_heads.mask_head."
    _load_detectron2_names(model, {
        "proposal_generator.rpn_head.objectness_logits.weight": "rpn.head.cls_logits.weight",
        head + "parameter_head.reduce_spatial_dim_conv.weight":
            head + "parameter_head.reduce.weight",
        head + "parameter_head.fc1.weight": head + "parameter_head.layers.2.weight",
        head + "parameter_head.fc2.bias": head + "parameter_head.layers.4.bias",
        head + "parameter_head.prediction.weight": head + "parameter_head.predictor.weight",
        head + "point_head.positional_encoding_gaussian_matrix":
            head + "point_head.positional_encoding_gaussian_matrix",
    }, tmp_path)


@pytest.mark.slow
def test_pointrend_semantic_trains_and_evaluates_under_train_net(tmp_path, train_run, car_split):
    """tools/train_net.py end to end with Detectron2's semantic recipe: class counts from the
    data, the category-area crop after the resize, SSD colour augmentation, evaluation."""
    run = tmp_path / "run"
    train_run(
        str(SEMANTIC_CONFIG), run,
        "DATASETS.TRAIN", f"('{car_split['train']}',)", "DATASETS.TEST", f"('{car_split['val']}',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0", "SOLVER.MAX_ITER", "4",
        "INPUT.MIN_SIZE_TRAIN", "(64, 96)", "INPUT.CROP.ENABLED", "True",
        "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", "(64, 64)",
        "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", "0.75", "INPUT.COLOR_AUG_SSD", "True",
    )
    records = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    losses = [r for r in records if "loss_sem_seg_point" in r]
    assert losses and all(math.isfinite(r["loss_sem_seg_point"]) for r in losses)
    assert any("sem_seg/mIoU" in r for r in records)
