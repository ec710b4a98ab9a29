"""PanopticUNet and Detectron2's panoptic fusion rules.

Training PanopticUNet end to end: tests/modeling/test_rcnn.py (overfitting two images).
"""

import math
from pathlib import Path

import pytest
import torch

from d2seg.config import get_cfg
from d2seg.data.catalog import DatasetCatalog
from d2seg.data.datasets import resolve_dataset
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.mapper import DatasetMapper
from d2seg.errors import ConfigError
from d2seg.evaluation import PanopticEvaluator
from d2seg.modeling import build_model
from d2seg.modeling.postprocess import combine_semantic_and_instance_outputs

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TINY_CONFIG = CONFIG_DIR / "tiny" / "panoptic_unet_R_18_tiny.yaml"


def tiny_cfg(*overrides: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.merge_from_list(list(overrides))
    return cfg


def _box_mask(rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def test_fusion_follows_detectron2_rules():
    instances = {
        "scores": torch.tensor([0.875, 0.75, 0.625, 0.25, 0.5625]),
        "classes": torch.tensor([1, 0, 0, 1, 1]),
        "masks": torch.stack(
            [
                _box_mask(slice(0, 3), slice(0, 4)),  # A: 12 px, placed first
                _box_mask(slice(1, 4), slice(2, 6)),  # B: 4 of 16 px under A -> keeps 12
                _box_mask(slice(0, 3), slice(1, 4)),  # C: entirely under A -> dropped
                _box_mask(slice(5, 6), slice(0, 8)),  # D: score below 0.5 -> dropped
                torch.zeros(6, 8, dtype=torch.bool),  # E: empty -> skipped
            ]
        ),
    }
    # 0 = things; 1 = stuff (22 free px); 2 = stuff with 2 px < the 3 px limit -> void.
    semantic = torch.ones(6, 8, dtype=torch.long)
    semantic[0:4, 0:6] = 0
    semantic[5, 6:8] = 2

    panoptic, segments = combine_semantic_and_instance_outputs(
        instances, semantic, overlap_threshold=0.5, stuff_area_thresh=3,
        instances_score_thresh=0.5,
    )

    expected = torch.tensor(
        [
            [1, 1, 1, 1, 0, 0, 3, 3],
            [1, 1, 1, 1, 2, 2, 3, 3],
            [1, 1, 1, 1, 2, 2, 3, 3],
            [0, 0, 2, 2, 2, 2, 3, 3],
            [3, 3, 3, 3, 3, 3, 3, 3],
            [3, 3, 3, 3, 3, 3, 0, 0],
        ],
        dtype=torch.int32,
    )
    assert panoptic.dtype == torch.int32
    assert torch.equal(panoptic, expected)
    assert segments == [
        {"id": 1, "isthing": True, "category_id": 1, "score": 0.875, "instance_id": 0},
        {"id": 2, "isthing": True, "category_id": 0, "score": 0.75, "instance_id": 1},
        {"id": 3, "isthing": False, "category_id": 1, "area": 22},
    ]


def test_panoptic_unet_outputs():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"))
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 16:48] = 1
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    inputs = [
        {
            "image": image,
            "instances": {"boxes": torch.tensor([[16.0, 8, 48, 40]]),
                          "classes": torch.tensor([0]), "masks": masks},
            "sem_seg": 1 - masks[0].long(),  # 0 = things, 1 = background stuff
        }
    ]
    losses = model.train()(inputs)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg",
                           "loss_mask", "loss_sem_seg"}
    with torch.no_grad():
        (output,) = model.eval()([{"image": image, "height": 96, "width": 80}])
    assert set(output) == {"instances", "sem_seg", "panoptic_seg"}
    assert output["sem_seg"].shape == (2, 96, 80)
    assert output["instances"]["masks"].shape[1:] == (96, 80)
    panoptic, segments = output["panoptic_seg"]
    assert panoptic.shape == (96, 80) and panoptic.dtype == torch.int32
    assert set(torch.unique(panoptic).tolist()) <= {0} | {s["id"] for s in segments}
    for segment in segments:
        assert {"id", "isthing", "category_id"} <= set(segment)
        assert ("score" if segment["isthing"] else "area") in segment


def test_panoptic_unet_needs_masks():
    with pytest.raises(ConfigError, match="MASK_ON"):
        build_model(tiny_cfg("MODEL.MASK_ON", "False"))


def test_panoptic_unet_trains_and_evaluates_on_converter_output(tmp_path):
    """Labelme → converter panoptic output → resolve_dataset → DatasetMapper (PanopticFPN
    labels: things 0, background 1) → a few training steps → fusion → finite PQ."""
    chipsets = CONFIG_DIR.parent / "annotations" / "chipsets"
    out = tmp_path / "out"
    convert_dataset(chipsets, out, labels_file=chipsets / "labels.txt")
    name = resolve_dataset(str(out / "annotations" / "all.json"))
    dataset_dicts = DatasetCatalog.get(name)[:4]
    cfg = tiny_cfg("MODEL.ROI_HEADS.NUM_CLASSES", 3, "SOLVER.BASE_LR", 0.003)
    train_mapper = DatasetMapper(**DatasetMapper.from_config(cfg, is_train=True))
    train_inputs = [train_mapper(d) for d in dataset_dicts]
    for x in train_inputs:
        assert set(x["sem_seg"].unique().tolist()) <= {0, 1, 255}
        # Thing pixels are label 0 (instances come from the COCO polygons, the label map from
        # the panoptic PNG: the two rasterisations differ on boundary pixels).
        things, label_0 = x["instances"]["masks"].bool().any(dim=0), x["sem_seg"] == 0
        assert (things & label_0).sum() > 0.9 * (things | label_0).sum()

    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.SOLVER.BASE_LR)
    for step in range(4):
        losses = model(train_inputs[step % 2 * 2: step % 2 * 2 + 2])
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    test_mapper = DatasetMapper(**DatasetMapper.from_config(cfg, is_train=False))
    evaluator = PanopticEvaluator(name)
    model.eval()
    with torch.no_grad():
        for d in dataset_dicts:
            x = test_mapper(d)
            evaluator.process([x], model([x]))
    metrics = evaluator.evaluate()["panoptic_seg"]
    assert math.isfinite(metrics["PQ"]) and math.isfinite(metrics["PQ_th"])
    # The converter writes things only: predicted background is void, never a category.
    assert math.isnan(metrics["PQ_st"])
    assert {"PQ-chip", "PQ-capacitor", "PQ-resistor"} <= set(metrics)
