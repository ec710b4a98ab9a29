"""Panoptic quality (PQ = SQ × RQ) with the matching rules of panopticapi's ``pq_compute``.

Per image, a predicted and a ground-truth segment of the same category match when their IoU is
> 0.5, where the union leaves out the predicted pixels that fall on void (id 0) in the ground
truth. Crowd ground-truth segments never match and are not false negatives; an unmatched
prediction is not a false positive when more than half of it lies on void or on a crowd region
of its own category. Per category, PQ = Σ IoU(TP) / (TP + FP/2 + FN/2), SQ = Σ IoU(TP) / TP and
RQ = TP / (TP + FP/2 + FN/2); the overall, things and stuff numbers average the categories that
occur (TP + FP + FN > 0). Every number is ×100, like Detectron2.

COCO panoptic PNGs store segment ids as R + 256·G + 256²·B.
"""

import io
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from d2seg.data.coco import read_json
from d2seg.errors import DatasetError
from d2seg.evaluation.evaluator import DatasetEvaluator, gather_to_main
from d2seg.utils.io import atomic_open, atomic_write_json

VOID = 0
# Larger than any segment id of a 24-bit RGB PNG, so gt * OFFSET + pred is a unique pair key.
OFFSET = 256**3
# Per category: [sum of matched IoUs, TP, FP, FN].
PanopticStats = dict[int, np.ndarray]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 COCO panoptic PNG pixels → H×W int64 segment ids (R + 256·G + 256²·B)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """H×W segment ids → H×W×3 uint8 COCO panoptic PNG pixels."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """A COCO panoptic PNG as H×W int64 segment ids."""
    try:
        with Image.open(path) as image:
            return rgb_to_id(np.asarray(image.convert("RGB")))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the panoptic PNG ({e}); fix: check it") from e


def panoptic_image_stats(
    gt_ids: np.ndarray,
    gt_segments: Iterable[dict],
    pred_ids: np.ndarray,
    pred_segments: Iterable[dict],
    source: str = "image",
) -> PanopticStats:
    """Match one image's segments; return ``{category_id: [iou_sum, tp, fp, fn]}``.

    Args:
        gt_ids, pred_ids: H×W segment ids (0 = void).
        gt_segments: ``{"id", "category_id", "iscrowd" (optional)}`` per ground-truth segment.
        pred_segments: ``{"id", "category_id"}`` per predicted segment; segments without
            pixels are ignored.
        source: named in the error raised for a map id missing from its segment list.
    """
    gt_info = {s["id"]: s for s in gt_segments}
    pred_info = {s["id"]: s for s in pred_segments}
    gt_area = dict(zip(*np.unique(gt_ids, return_counts=True)))
    pred_area = dict(zip(*np.unique(pred_ids, return_counts=True)))
    for what, area, info in (("ground truth", gt_area, gt_info), ("prediction", pred_area,
                                                                  pred_info)):
        missing = [int(i) for i in area if i != VOID and i not in info]
        if missing:
            raise DatasetError(
                f"{source}: {what} segment id {missing[0]} is in the map but not in its "
                f"segments_info; fix: list every segment of the PNG/map in segments_info"
            )
    pairs, counts = np.unique(gt_ids.astype(np.int64) * OFFSET + pred_ids, return_counts=True)
    intersection = {(int(p // OFFSET), int(p % OFFSET)): int(c) for p, c in zip(pairs, counts)}

    stats: PanopticStats = defaultdict(lambda: np.zeros(4))
    gt_matched, pred_matched = set(), set()
    for (gt_id, pred_id), inter in intersection.items():
        if gt_id not in gt_info or pred_id not in pred_info:
            continue
        gt, pred = gt_info[gt_id], pred_info[pred_id]
        if gt.get("iscrowd", 0) or gt["category_id"] != pred["category_id"]:
            continue
        union = pred_area[pred_id] + gt_area[gt_id] - inter - intersection.get((VOID, pred_id), 0)
        iou = inter / union
        if iou > 0.5:
            stats[gt["category_id"]] += (iou, 1, 0, 0)
            gt_matched.add(gt_id)
            pred_matched.add(pred_id)

    crowd_by_category = {}
    for gt_id, gt in gt_info.items():
        if gt_id in gt_matched:
            continue
        if gt.get("iscrowd", 0):
            crowd_by_category[gt["category_id"]] = gt_id
        else:
            stats[gt["category_id"]] += (0, 0, 0, 1)
    for pred_id, pred in pred_info.items():
        if pred_id in pred_matched or pred_id not in pred_area:
            continue
        ignored = intersection.get((VOID, pred_id), 0)
        crowd_id = crowd_by_category.get(pred["category_id"])
        if crowd_id is not None:
            ignored += intersection.get((crowd_id, pred_id), 0)
        if ignored / pred_area[pred_id] > 0.5:
            continue
        stats[pred["category_id"]] += (0, 0, 1, 0)
    return dict(stats)


def panoptic_metrics(
    stats: PanopticStats, categories: dict[int, dict]
) -> dict[str, float]:
    """PQ/SQ/RQ (×100) overall, over things (``_th``), stuff (``_st``) and per class.

    Args:
        stats: summed :func:`panoptic_image_stats` of all images.
        categories: category id → ``{"name", "isthing"}``; per-class keys are
            ``PQ-<name>``, ``SQ-<name>``, ``RQ-<name>`` (NaN for a category that never occurs).
    """
    per_class: dict[int, tuple[float, float, float]] = {}
    for category in categories:
        iou, tp, fp, fn = stats.get(category, np.zeros(4))
        if tp + fp + fn == 0:
            continue
        denominator = tp + 0.5 * fp + 0.5 * fn
        per_class[category] = (iou / denominator, iou / tp if tp else 0.0, tp / denominator)
    metrics = {}
    for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
        group = [
            values for c, values in per_class.items()
            if isthing is None or bool(categories[c].get("isthing", 1)) == isthing
        ]
        for i, name in enumerate(("PQ", "SQ", "RQ")):
            metrics[f"{name}{suffix}"] = (
                float(np.mean([v[i] for v in group]) * 100) if group else float("nan")
            )
    for category, info in categories.items():
        values = per_class.get(category)
        for i, name in enumerate(("PQ", "SQ", "RQ")):
            metrics[f"{name}-{info['name']}"] = float(values[i] * 100) if values else float("nan")
    return metrics


def _add_stats(total: PanopticStats, part: PanopticStats) -> None:
    for category, values in part.items():
        total[category] = total.get(category, np.zeros(4)) + values


def evaluate_coco_panoptic(
    gt_json: str | os.PathLike,
    gt_folder: str | os.PathLike,
    pred_json: str | os.PathLike,
    pred_folder: str | os.PathLike,
) -> dict[str, float]:
    """PQ of COCO panoptic predictions (json + PNG folder) against COCO panoptic ground truth.

    Categories (names, ``isthing``) come from the ground-truth json; images are paired by
    ``image_id`` and every ground-truth image needs a prediction.
    """
    gt, pred = read_json(gt_json, "COCO panoptic file"), read_json(pred_json, "COCO panoptic file")
    categories = {c["id"]: c for c in gt["categories"]}
    predictions = {a["image_id"]: a for a in pred["annotations"]}
    stats: PanopticStats = {}
    for gt_ann in gt["annotations"]:
        pred_ann = predictions.get(gt_ann["image_id"])
        if pred_ann is None:
            raise DatasetError(
                f"{pred_json}: no prediction for image_id {gt_ann['image_id']}; fix: predict "
                f"every image of {gt_json}"
            )
        unknown = [s["category_id"] for s in pred_ann["segments_info"]
                   if s["category_id"] not in categories]
        if unknown:
            raise DatasetError(
                f"{pred_json}: image_id {gt_ann['image_id']} has category_id {unknown[0]}, "
                f"which is not in {gt_json}; fix: use the ground truth's category ids"
            )
        _add_stats(stats, panoptic_image_stats(
            read_panoptic_png(Path(gt_folder) / gt_ann["file_name"]), gt_ann["segments_info"],
            read_panoptic_png(Path(pred_folder) / pred_ann["file_name"]),
            pred_ann["segments_info"], source=str(Path(pred_folder) / pred_ann["file_name"]),
        ))
    return panoptic_metrics(stats, categories)


class PanopticEvaluator(DatasetEvaluator):
    """PQ/SQ/RQ of a model's ``panoptic_seg`` output against ``pan_seg_file_name`` PNGs.

    Model output per image: ``(H×W int32 segment ids, [{"id", "isthing", "category_id"
    (contiguous), "score"}])``, 0 = void. Ground truth: the dataset dict's
    ``pan_seg_file_name`` and ``segments_info`` (contiguous category ids, ``iscrowd``).
    ``evaluate()`` returns ``{"panoptic_seg": {PQ, SQ, RQ, PQ_th, ..., RQ_st, "PQ-<class>",
    ...}}`` (×100). With ``output_dir`` the predictions are also written in COCO panoptic
    format (``panoptic_predictions.json`` + ``panoptic_predictions/*.png``, dataset ids).
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        output_dir: str | os.PathLike | None = None,
        *,
        class_names: list[str] | None = None,
        thing_ids: Iterable[int] | None = None,
        dataset_ids: list[int] | None = None,
    ):
        """
        Args:
            dataset_name: a registered panoptic dataset; gives ``thing_classes`` (names of all
                contiguous ids), ``thing_dataset_id_to_contiguous_id`` and
                ``stuff_dataset_id_to_contiguous_id``.
            output_dir: where to write the COCO panoptic predictions (``None``: not written).
            class_names: name of each contiguous category (instead of the metadata).
            thing_ids: the contiguous ids that are things; default the metadata's, else the
                ``isthing`` flags of the ground-truth segments.
            dataset_ids: dataset category id of each contiguous id, for the written files.
        """
        maps = {}
        if dataset_name is not None:
            from d2seg.data.catalog import MetadataCatalog

            metadata = MetadataCatalog.get(dataset_name)
            class_names = class_names or metadata.get("thing_classes")
            maps = {
                **metadata.get("stuff_dataset_id_to_contiguous_id", {}),
                **metadata.get("thing_dataset_id_to_contiguous_id", {}),
            }
            if thing_ids is None and metadata.get("thing_dataset_id_to_contiguous_id"):
                thing_ids = metadata.thing_dataset_id_to_contiguous_id.values()
        if not class_names:
            raise DatasetError(
                f"PanopticEvaluator: dataset '{dataset_name}' has no class names; fix: register "
                f"it with register_coco_panoptic or pass class_names=[...]"
            )
        self._class_names = list(class_names)
        self._thing_ids = None if thing_ids is None else set(thing_ids)
        if dataset_ids is None and maps:
            dataset_ids = [d for d, _ in sorted(maps.items(), key=lambda kv: kv[1])]
        self._dataset_ids = dataset_ids or list(range(1, len(self._class_names) + 1))
        self._output_dir = output_dir
        self.reset()

    def reset(self) -> None:
        self._stats: PanopticStats = {}
        self._gt_thing_ids: set[int] = set()
        self._predictions: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "panoptic_seg" not in out:
                continue
            pred_map, pred_segments = out["panoptic_seg"]
            pred_ids = pred_map.detach().cpu().numpy().astype(np.int64) if isinstance(
                pred_map, torch.Tensor) else np.asarray(pred_map, dtype=np.int64)
            bad = [s["category_id"] for s in pred_segments
                   if not 0 <= s["category_id"] < len(self._class_names)]
            if bad:
                raise DatasetError(
                    f"image {inp.get('image_id')}: the model predicted category {bad[0]}, but "
                    f"the dataset has {len(self._class_names)} classes; fix: make the model's "
                    f"class count match the dataset's"
                )
            gt_ids = read_panoptic_png(inp["pan_seg_file_name"])
            if gt_ids.shape != pred_ids.shape:
                raise DatasetError(
                    f"{inp['pan_seg_file_name']}: ground truth is {gt_ids.shape} but the "
                    f"prediction is {pred_ids.shape}; fix: the dataset's height/width must match "
                    f"its panoptic PNG"
                )
            _add_stats(self._stats, panoptic_image_stats(
                gt_ids, inp["segments_info"], pred_ids, pred_segments,
                source=f"image {inp.get('image_id')}",
            ))
            self._gt_thing_ids |= {s["category_id"] for s in inp["segments_info"]
                                   if s.get("isthing", True)}
            if self._output_dir is not None:
                self._predictions.append(self._coco_panoptic_prediction(inp, pred_ids,
                                                                        pred_segments))

    def _coco_panoptic_prediction(
        self, inp: dict, pred_ids: np.ndarray, pred_segments: list[dict]
    ) -> dict:
        png = io.BytesIO()
        Image.fromarray(id_to_rgb(pred_ids)).save(png, format="PNG")
        return {
            "image_id": inp["image_id"],
            "file_name": Path(inp["pan_seg_file_name"]).with_suffix(".png").name,
            "png": png.getvalue(),
            "segments_info": [
                {**s, "category_id": self._dataset_ids[s["category_id"]]} for s in pred_segments
            ],
        }

    def _write_predictions(self, predictions: list[dict]) -> None:
        folder = Path(self._output_dir) / "panoptic_predictions"
        for prediction in predictions:
            with atomic_open(folder / prediction["file_name"], "wb") as f:
                f.write(prediction["png"])
        annotations = [{k: v for k, v in p.items() if k != "png"} for p in predictions]
        atomic_write_json(
            Path(self._output_dir) / "panoptic_predictions.json", {"annotations": annotations}
        )

    def evaluate(self) -> dict[str, Any]:
        gathered = gather_to_main([(self._stats, self._gt_thing_ids, self._predictions)])
        if gathered is None:
            return {}
        stats: PanopticStats = {}
        for part, gt_thing_ids, _ in gathered:
            _add_stats(stats, part)
            self._gt_thing_ids |= gt_thing_ids
        if self._output_dir is not None:
            self._write_predictions([p for _, _, part in gathered for p in part])
        thing_ids = self._thing_ids if self._thing_ids is not None else self._gt_thing_ids
        categories = {
            k: {"name": name, "isthing": k in thing_ids} for k, name in enumerate(self._class_names)
        }
        return {"panoptic_seg": panoptic_metrics(stats, categories)}
