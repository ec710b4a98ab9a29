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

from d2seg.config import CfgNode
from d2seg.data.coco import is_thing
from d2seg.data.detection_utils import PANOPTIC_BACKGROUND_LABEL, PANOPTIC_FIRST_STUFF_LABEL
from d2seg.data.io import read_json, read_panoptic_ids
from d2seg.errors import DatasetError
from d2seg.evaluation.evaluator import DatasetEvaluator, gather_to_main
from d2seg.utils.io import atomic_open, atomic_write_json

VOID = 0
# Larger than any segment id of a 24-bit RGB PNG, so gt * OFFSET + pred is a unique pair key.
OFFSET = 256**3
# Per category: [sum of matched IoUs, TP, FP, FN].
PanopticStats = dict[int, np.ndarray]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """H×W segment ids → H×W×3 uint8 COCO panoptic PNG pixels."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)


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
            if isthing is None or is_thing(categories[c]) == isthing
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
            read_panoptic_ids(Path(gt_folder) / gt_ann["file_name"]), gt_ann["segments_info"],
            read_panoptic_ids(Path(pred_folder) / pred_ann["file_name"]),
            pred_ann["segments_info"], source=str(Path(pred_folder) / pred_ann["file_name"]),
        ))
    return panoptic_metrics(stats, categories)


class PanopticEvaluator(DatasetEvaluator):
    """PQ/SQ/RQ of a model's ``panoptic_seg`` output against ``pan_seg_file_name`` PNGs.

    Model output per image (PanopticUNet's fusion): ``(H×W int32 segment ids, 0 = void,
    [{"id", "isthing", "category_id", ...}])`` where a thing's ``category_id`` is its instance
    class (0..T-1, contiguous over thing categories) and a stuff segment's is its semantic label
    in PanopticFPN's convention (see :func:`d2seg.data.detection_utils.panoptic_to_targets`):
    1 = background, which is no dataset category and is scored as void, 2 + k = stuff category
    k (by stuff ids in contiguous order). Ground truth: the dataset dict's ``pan_seg_file_name``
    and ``segments_info`` (contiguous ids of the metadata's thing/stuff maps, ``isthing``,
    ``iscrowd``), as :func:`d2seg.data.datasets.register_coco_panoptic` loads them. Both are
    mapped to dataset category ids before matching. ``evaluate()`` returns ``{"panoptic_seg":
    {PQ, SQ, RQ, PQ_th, ..., RQ_st, "PQ-<class>", ...}}`` (×100). With ``output_dir`` the
    predictions are also written in COCO panoptic format (``panoptic_predictions.json`` +
    ``panoptic_predictions/*.png``, dataset ids).
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        output_dir: str | os.PathLike | None = None,
        *,
        thing_classes: list[str] | None = None,
        stuff_classes: list[str] | None = None,
    ):
        """
        Args:
            dataset_name: a registered panoptic dataset; gives
                ``thing_dataset_id_to_contiguous_id``, ``stuff_dataset_id_to_contiguous_id``
                (optional) and the names ``thing_classes[thing id]``, ``stuff_classes[stuff id]``.
            output_dir: where to write the COCO panoptic predictions (``None``: not written).
            thing_classes, stuff_classes: names by contiguous id, instead of a dataset; their
                dataset ids are then 1..T and T+1..T+S.
        """
        if dataset_name is not None:
            from d2seg.data.catalog import DatasetCatalog, MetadataCatalog

            metadata = MetadataCatalog.get(dataset_name)
            if metadata.get("thing_dataset_id_to_contiguous_id") is None:
                DatasetCatalog.get(dataset_name)  # loading a COCO json sets the class maps
            thing_map = metadata.get("thing_dataset_id_to_contiguous_id") or {}
            stuff_map = metadata.get("stuff_dataset_id_to_contiguous_id") or {}
            names = {d: metadata.thing_classes[c] for d, c in thing_map.items()}
            names.update({d: metadata.stuff_classes[c] for d, c in stuff_map.items()})
        else:
            things, stuff = list(thing_classes or []), list(stuff_classes or [])
            thing_map = {i + 1: i for i in range(len(things))}
            stuff_map = {len(things) + 1 + i: i for i in range(len(stuff))}
            names = dict(zip([*thing_map, *stuff_map], things + stuff))
        if not thing_map and not stuff_map:
            raise DatasetError(
                f"PanopticEvaluator: dataset '{dataset_name}' has no categories; fix: register "
                f"it with register_coco_panoptic or pass thing_classes=[...]"
            )
        # Dataset id of each model class: instance class t, stuff semantic label 2 + k.
        self._thing_dataset_ids = [d for d, _ in sorted(thing_map.items(), key=lambda kv: kv[1])]
        self._stuff_dataset_ids = [d for d, _ in sorted(stuff_map.items(), key=lambda kv: kv[1])]
        self._gt_dataset_ids = {(True, c): d for d, c in thing_map.items()}
        self._gt_dataset_ids.update({(False, c): d for d, c in stuff_map.items()})
        self._categories = {d: {"name": names[d], "isthing": d in thing_map} for d in names}
        self._output_dir = output_dir
        self.reset()


    @classmethod
    def from_config(
        cls, cfg: CfgNode, dataset_name: str, output_dir: str | os.PathLike | None = None
    ) -> dict[str, Any]:
        """Constructor arguments: the dataset and the output folder (no config key applies)."""
        return {"dataset_name": dataset_name, "output_dir": output_dir}
    def reset(self) -> None:
        self._stats: PanopticStats = {}
        self._predictions: list[dict] = []

    def _prediction_dataset_id(self, segment: dict, image_id: Any) -> int | None:
        """Dataset category id of a predicted segment; None for the background stuff class."""
        category = segment["category_id"]
        if segment.get("isthing", True):
            ids, index = self._thing_dataset_ids, category
        elif category == PANOPTIC_BACKGROUND_LABEL:
            return None
        else:
            ids, index = self._stuff_dataset_ids, category - PANOPTIC_FIRST_STUFF_LABEL
        if not 0 <= index < len(ids):
            kind = "thing" if segment.get("isthing", True) else "stuff"
            raise DatasetError(
                f"image {image_id}: the model predicted {kind} category {category}, but the "
                f"dataset has {len(self._thing_dataset_ids)} thing and "
                f"{len(self._stuff_dataset_ids)} stuff classes; fix: set "
                f"MODEL.ROI_HEADS.NUM_CLASSES to the thing count and SEM_SEG_HEAD.NUM_CLASSES to "
                f"2 + the stuff count"
            )
        return ids[index]

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "panoptic_seg" not in out:
                continue
            pred_map, segments = out["panoptic_seg"]
            pred_ids = pred_map.detach().cpu().numpy().astype(np.int64) if isinstance(
                pred_map, torch.Tensor) else np.array(pred_map, dtype=np.int64)
            pred_segments = []
            for segment in segments:
                category = self._prediction_dataset_id(segment, inp.get("image_id"))
                if category is None:
                    pred_ids[pred_ids == segment["id"]] = VOID
                else:
                    pred_segments.append({**segment, "category_id": category})
            gt_segments = [
                {**s, "category_id": self._gt_dataset_ids[(bool(s.get("isthing", True)),
                                                           s["category_id"])]}
                for s in inp["segments_info"]
            ]
            gt_ids = read_panoptic_ids(inp["pan_seg_file_name"])
            if gt_ids.shape != pred_ids.shape:
                raise DatasetError(
                    f"{inp['pan_seg_file_name']}: ground truth is {gt_ids.shape} but the "
                    f"prediction is {pred_ids.shape}; fix: the dataset's height/width must match "
                    f"its panoptic PNG"
                )
            _add_stats(self._stats, panoptic_image_stats(
                gt_ids, gt_segments, pred_ids, pred_segments,
                source=f"image {inp.get('image_id')}",
            ))
            if self._output_dir is not None:
                self._predictions.append(_coco_panoptic_prediction(inp, pred_ids, pred_segments))

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
        gathered = gather_to_main([(self._stats, self._predictions)])
        if gathered is None:
            return {}
        stats: PanopticStats = {}
        for part, _ in gathered:
            _add_stats(stats, part)
        if self._output_dir is not None:
            self._write_predictions([p for _, part in gathered for p in part])
        return {"panoptic_seg": panoptic_metrics(stats, self._categories)}


def _coco_panoptic_prediction(inp: dict, pred_ids: np.ndarray, pred_segments: list[dict]) -> dict:
    """One image's prediction as a COCO panoptic annotation plus its PNG bytes."""
    png = io.BytesIO()
    Image.fromarray(id_to_rgb(pred_ids)).save(png, format="PNG")
    return {
        "image_id": inp["image_id"],
        "file_name": Path(inp["pan_seg_file_name"]).with_suffix(".png").name,
        "png": png.getvalue(),
        "segments_info": pred_segments,
    }
