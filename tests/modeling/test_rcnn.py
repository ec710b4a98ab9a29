"""GeneralizedRCNN (Mask R-CNN over torchvision): losses, outputs, resizing back, overfitting.

The overfitting test covers the whole family on the same data: Mask R-CNN, PointRend (a mask
head of GeneralizedRCNN) and PanopticUNet (a GeneralizedRCNN with a stuff head).
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops import masks_to_boxes

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.errors import ConfigError, DatasetError
from d2seg.modeling import build_model
from d2seg.modeling.postprocess import detector_postprocess

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_CONFIG = CONFIGS / "tiny" / "mask_rcnn_R_18_tiny.yaml"
RCNN_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}


def tiny_cfg(*overrides: Any, path: Path = TINY_CONFIG):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(overrides))
    return cfg


def balloon_inputs(count: int, size: int) -> list[dict]:
    """``count`` synthetic balloon images (RGB, ``size``² px) as model inputs: instances, and
    ``sem_seg`` as PanopticUNet reads it (0 on any balloon pixel, 1 = background stuff)."""
    inputs = []
    for index in range(count):
        sample = render_sample("balloons", seed=1, index=index, size=(size, size))
        masks = torch.from_numpy(sample["masks"]).to(torch.uint8)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        inputs.append(
            {
                "image": image.contiguous(),
                "height": size,
                "width": size,
                "instances": {
                    # masks_to_boxes gives the last pixel's index; boxes end at its far edge.
                    "boxes": masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0]),
                    "classes": torch.tensor(sample["classes"]),
                    "masks": masks,
                },
                "sem_seg": 1 - masks.amax(dim=0).long(),
            }
        )
    return inputs


def best_iou_per_target(inputs: list[dict], outputs: list[dict], min_score: float) -> list:
    """For each ground-truth mask, the best IoU of a predicted mask scoring ≥ ``min_score``."""
    ious = []
    for x, output in zip(inputs, outputs):
        predicted = output["instances"]["masks"][output["instances"]["scores"] >= min_score]
        for target in x["instances"]["masks"].bool():
            if len(predicted) == 0:
                ious.append(0.0)
                continue
            inter = (predicted & target).sum((1, 2)).float()
            union = (predicted | target).sum((1, 2)).float()
            ious.append(float((inter / union).max()))
    return ious


def stuff_ious(inputs: list[dict], outputs: list[dict]) -> list:
    """Per image the IoU of the predicted and true stuff (semantic label 1); none without a
    semantic output."""
    ious = []
    for x, output in zip(inputs, outputs):
        if "sem_seg" in output:
            stuff, truth = output["sem_seg"].argmax(dim=0) == 1, x["sem_seg"] == 1
            ious.append(float((stuff & truth).sum() / (stuff | truth).sum()))
    return ious


@pytest.mark.parametrize(
    "config", ["mask_rcnn_R_18_tiny", "pointrend_R_18_tiny", "panoptic_unet_R_18_tiny"]
)
def test_tiny_model_overfits_two_images(config: str):
    """AdamW (lr 1e-3) until every balloon has a mask (score ≥ 0.5) with IoU ≥ 0.8."""
    cfg = tiny_cfg(
        "MODEL.ROI_HEADS.NUM_CLASSES", "1", "MODEL.POINT_HEAD.NUM_CLASSES", "1",
        path=CONFIGS / "tiny" / f"{config}.yaml",
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs = balloon_inputs(2, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(1, 161):
        model.train()
        losses = model(inputs)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        if step % 20 == 0:
            model.eval()
            with torch.no_grad():
                outputs = model([{"image": x["image"]} for x in inputs])
            ious = best_iou_per_target(inputs, outputs, min_score=0.5)
            if min(ious) >= 0.8 and min(stuff_ious(inputs, outputs), default=1.0) >= 0.9:
                break
    assert min(ious) >= 0.8, ious
    if cfg.MODEL.META_ARCHITECTURE == "PanopticUNet":
        assert min(stuff_ious(inputs, outputs)) >= 0.9
        for x, output in zip(inputs, outputs):
            things = [s for s in output["panoptic_seg"][1] if s["isthing"]]
            assert len(things) >= len(x["instances"]["classes"])


@pytest.mark.parametrize(
    "config, mask_losses",
    [
        ("mask_rcnn_R_18_tiny", {"loss_mask"}),
        ("pointrend_R_18_tiny", {"loss_mask", "loss_mask_point"}),
    ],
)
def test_training_returns_detectron2_loss_names_and_survives_empty_images(config, mask_losses):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(path=CONFIGS / "tiny" / f"{config}.yaml")).train()
    inputs = balloon_inputs(2, 64)
    empty = inputs[1]["instances"]
    inputs[1]["instances"] = {
        "boxes": torch.zeros(0, 4),
        "classes": torch.zeros(0, dtype=torch.long),
        "masks": torch.zeros(0, *empty["masks"].shape[1:], dtype=torch.uint8),
    }
    losses = model(inputs)
    assert set(losses) == RCNN_LOSSES | mask_losses
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    # A batch of only empty images trains too (no positive proposals, no mask targets).
    losses = model([inputs[1]])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_inference_returns_instances_at_the_input_height_and_width():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")).eval()
    image = balloon_inputs(1, 64)[0]["image"][:, :, :48]  # 64×48: padded to 64×64 inside
    with torch.no_grad():
        (output,) = model([{"image": image, "height": 128, "width": 96}])
    instances = output["instances"]
    assert set(output) == {"instances"}
    assert set(instances) == {"boxes", "scores", "classes", "masks"}
    count = len(instances["scores"])
    assert 0 < count <= 20  # TEST.DETECTIONS_PER_IMAGE
    assert instances["boxes"].shape == (count, 4)
    assert instances["masks"].shape == (count, 128, 96) and instances["masks"].dtype == torch.bool
    assert instances["classes"].dtype == torch.int64
    assert instances["classes"].min() >= 0 and instances["classes"].max() < 2
    assert instances["boxes"][:, 2].max() <= 96 and instances["boxes"][:, 3].max() <= 128
    assert instances["boxes"].device == image.device


def test_mask_on_false_is_faster_rcnn():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.MASK_ON", "False"))
    inputs = balloon_inputs(1, 64)
    assert set(model.train()(inputs)) == RCNN_LOSSES
    with torch.no_grad():
        (output,) = model.eval()([{"image": inputs[0]["image"]}])
    assert set(output["instances"]) == {"boxes", "scores", "classes"}


def test_detector_postprocess_scales_boxes_and_pastes_masks():
    # A 28×28 all-foreground mask on box (8, 4)-(24, 20) of a 32×32 image, returned at 64×64:
    # exactly the pixels whose centres are inside the scaled box (16, 8)-(48, 40).
    result = {
        "boxes": torch.tensor([[8.0, 4.0, 24.0, 20.0]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([2]),
        "masks": torch.ones(1, 1, 28, 28),
    }
    instances = detector_postprocess(result, (32, 32), 64, 64)
    torch.testing.assert_close(instances["boxes"], torch.tensor([[16.0, 8.0, 48.0, 40.0]]))
    assert instances["classes"].tolist() == [1]
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[8:40, 16:48] = True
    assert torch.equal(instances["masks"][0], expected)


def test_anchor_sizes_must_match_rpn_features():
    cfg = tiny_cfg("MODEL.ANCHOR_GENERATOR.SIZES", "[[8], [16]]")
    with pytest.raises(ConfigError, match="ANCHOR_GENERATOR.SIZES"):
        build_model(cfg)


def test_classes_beyond_num_classes_are_a_dataset_error():
    model = build_model(tiny_cfg()).train()  # NUM_CLASSES 2
    inputs = balloon_inputs(1, 64)
    inputs[0]["instances"]["classes"] = inputs[0]["instances"]["classes"] + 2
    with pytest.raises(DatasetError, match="NUM_CLASSES"):
        model(inputs)
    del inputs[0]["instances"]
    with pytest.raises(DatasetError, match="instances"):
        model(inputs)


@pytest.fixture(scope="module")
def torchvision_maskrcnn_file(tmp_path_factory):
    """A random torchvision ``maskrcnn_resnet50_fpn`` (91 classes) saved as a state dict."""
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    path = tmp_path_factory.mktemp("weights") / "maskrcnn_resnet50_fpn.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _r50_fpn_loaded(path: Path, num_classes: int):
    config = CONFIGS / "InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x.yaml"
    model = build_model(tiny_cfg("MODEL.ROI_HEADS.NUM_CLASSES", num_classes, "MODEL.DEVICE", "cpu",
                                 path=config))
    checkpointer = D2SegCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    return model.eval(), incompatible


def test_every_torchvision_maskrcnn_tensor_lands(torchvision_maskrcnn_file):
    """MODEL.WEIGHTS may be a torchvision Mask R-CNN file: with the same class count (90
    foreground + background) nothing is missing, unused or mis-shaped, and every part computes
    what torchvision's does."""
    tv, path = torchvision_maskrcnn_file
    model, incompatible = _r50_fpn_loaded(path, 90)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes
    torch.manual_seed(1)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 96)
        pyramid = model.backbone(x)
        for ours, theirs in zip(pyramid.values(), tv.backbone(x).values()):
            torch.testing.assert_close(ours, theirs)
        levels = list(pyramid.values())
        torch.testing.assert_close(model.rpn.head(levels), tv.rpn.head(levels))
        pooled = torch.randn(3, 256, 7, 7)
        torch.testing.assert_close(
            model.roi_heads.box_predictor(model.roi_heads.box_head(pooled)),
            tv.roi_heads.box_predictor(tv.roi_heads.box_head(pooled)),
        )
        mask_features = torch.randn(2, 256, 14, 14)
        mask_head = model.roi_heads.mask_head
        torch.testing.assert_close(
            mask_head.predictor(mask_head.convs(mask_features)),
            tv.roi_heads.mask_predictor(tv.roi_heads.mask_head(mask_features)),
        )


def test_torchvision_maskrcnn_with_other_class_count_skips_only_the_predictors(
    torchvision_maskrcnn_file,
):
    tv, path = torchvision_maskrcnn_file
    model, incompatible = _r50_fpn_loaded(path, 3)
    layers = ("box_predictor.cls_score", "box_predictor.bbox_pred",
              "mask_head.predictor.mask_fcn_logits")
    predictors = {f"roi_heads.{layer}.{p}" for p in ("weight", "bias") for layer in layers}
    # fvcore skips the mis-shaped tensors (with its warning), so they are also "missing".
    assert {key for key, _, _ in incompatible.incorrect_shapes} == predictors
    assert set(incompatible.missing_keys) == predictors and not incompatible.unexpected_keys
    torch.testing.assert_close(model.roi_heads.mask_head.predictor.conv5_mask.weight,
                               tv.roi_heads.mask_predictor.conv5_mask.weight)


def test_checkpointer_loads_torchvision_resnet_into_grayscale_panoptic_model(tmp_path):
    """A torchvision ResNet file: its conv1 summed over RGB into the gray trunk's one channel."""
    model = build_model(tiny_cfg("INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", [128.0],
                                 "MODEL.PIXEL_STD", [64.0],
                                 path=CONFIGS / "tiny/panoptic_unet_R_18_tiny.yaml"))
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(resnet, tmp_path / "resnet18.pth")
    D2SegCheckpointer(model).load(str(tmp_path / "resnet18.pth"))
    trunk = model.backbone.bottom_up
    torch.testing.assert_close(trunk.conv1.weight.detach(),
                               resnet["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(trunk.layer4[1].conv2.weight.detach(),
                               resnet["layer4.1.conv2.weight"])


def test_thresholded_paste_equals_thresholding_the_float_paste():
    """paste_masks(threshold=t) writes bool box by box; it must equal pasting probabilities and
    thresholding the whole image afterwards."""
    from d2seg.modeling.postprocess import paste_masks

    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(12, 28, 28, generator=generator)
    corners = torch.rand(12, 2, generator=generator) * 70 - 10
    boxes = torch.cat([corners, corners + 5 + torch.rand(12, 2, generator=generator) * 40], 1)
    binary = paste_masks(masks, boxes, 61, 83, threshold=0.5)
    assert binary.dtype == torch.bool
    assert torch.equal(binary, paste_masks(masks, boxes, 61, 83) >= 0.5)


def test_channels_last_mask_head_equals_torchvision_modules_on_nchw():
    """The mask head runs its convs channels-last for speed; its logits must equal
    torchvision's ``MaskRCNNHeads`` and ``MaskRCNNPredictor`` (the same modules) called on the
    plain NCHW features, and the per-box probabilities ``maskrcnn_inference`` gives."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    torch.manual_seed(0)
    head = build_model(tiny_cfg("MODEL.DEVICE", "cpu")).eval().roi_heads.mask_head
    features = torch.randn(6, head.predictor.conv5_mask.in_channels, 14, 14)
    labels = [torch.tensor([1, 2, 1, 2]), torch.tensor([2, 1])]
    with torch.no_grad():
        logits = head.mask_logits(features)
        expected = head.predictor(head.convs(features.contiguous()))
        probabilities = head.predict_from_features(features, labels)
    assert not expected.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(probabilities, maskrcnn_inference(expected, labels)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
