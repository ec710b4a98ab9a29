"""The records shared by tools/predict.py's files and tools/serve.py's answers, checked with
pycocotools decoding the RLE they carry."""

import numpy as np
import torch
from pycocotools import mask as mask_util

from d2seg.engine.prediction_records import (
    instance_records,
    panoptic_segments,
    semantic_labels,
    semantic_record,
)


def test_semantic_record_lists_present_classes_with_areas_and_exact_masks():
    logits = torch.zeros(3, 20, 30)
    logits[1, :, :10] = 5
    logits[2, 5:15, 20:] = 5  # class 0 wins the rest
    record = semantic_record(logits, ["background", "road"])
    labels = semantic_labels(logits)
    assert [(c["id"], c["name"]) for c in record["classes"]] == [
        (0, "background"), (1, "road"), (2, "class 2")]
    assert sum(c["area"] for c in record["classes"]) == 20 * 30
    for c in record["classes"]:
        mask = mask_util.decode(c["segmentation"]).astype(bool)
        assert np.array_equal(mask, labels == c["id"]) and mask.sum() == c["area"]
    binary = semantic_record(torch.full((1, 4, 4), -1.0), ["background", "car"])
    assert [(c["name"], c["area"]) for c in binary["classes"]] == [("background", 16)]


def test_instance_and_panoptic_records_name_classes_and_carry_rle():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 1:4, 1:5] = True
    masks[1, 5:9, 6:12] = True
    instances = {"boxes": torch.tensor([[1.0, 1, 5, 4], [6, 5, 12, 9]]),
                 "scores": torch.tensor([0.9, 0.4]), "classes": torch.tensor([0, 1]),
                 "masks": masks}
    records = instance_records(instances, 7, ["balloon"], [3, 9], polygons=True)
    assert [(r["image_id"], r["category_id"], r["category_name"]) for r in records] == [
        (7, 3, "balloon"), (7, 9, "class 1")]
    assert records[0]["bbox"] == [1.0, 1.0, 4.0, 3.0] and records[0]["polygons"]
    assert np.array_equal(mask_util.decode(records[1]["segmentation"]).astype(bool),
                          masks[1].numpy())
    ids = np.zeros((10, 12), np.int64)
    ids[masks[0].numpy()] = 1
    ids[5:, :] = 2
    segments = [{"id": 1, "category_id": 0, "isthing": True, "score": 0.9},
                {"id": 2, "category_id": 2, "isthing": False},
                {"id": 3, "category_id": 0, "isthing": True}]  # empty: left out
    info = panoptic_segments(ids, segments, ["balloon"], ["sky"], with_masks=True)
    assert [(s["id"], s["category_id"], s["category_name"], s["isthing"], s["area"])
            for s in info] == [(1, 1, "balloon", 1, 12), (2, 3, "sky", 0, 60)]
    assert info[1]["bbox"] == [0, 5, 12, 5] and info[0]["score"] == 0.9
    assert np.array_equal(mask_util.decode(info[1]["segmentation"]).astype(bool), ids == 2)
