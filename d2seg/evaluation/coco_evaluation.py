"""COCO instance evaluation (box and mask AP) with pycocotools or faster-coco-eval.

:class:`COCOEvaluator` turns a model's per-image instances into COCO results, writes them to
``coco_instances_results.json`` and runs COCOeval, as Detectron2's evaluator does. The pieces it
is built from are public because ``tools/evaluate_coco.py`` runs the same evaluation on any
results file: :func:`load_coco_gt`, :func:`validate_coco_results`,
:func:`evaluate_coco_predictions` and :func:`instance_confusion_matrix`.

Area ranges (small/medium/large) follow pycocotools: a ground-truth object's size class comes
from its ``area`` field (``tools/convert_labelme.py`` writes the mask's pixel count there), a
detection's from its mask area for ``segm`` and its box area for ``bbox``.
"""

import contextlib
import io
import logging
import math
import os
from collections import defaultdict
from typing import Any, Literal

import numpy as np
import torch
from pycocotools import mask as mask_util

from d2seg.config import CfgNode
from d2seg.data.coco import check_segmentation, is_thing, validate
from d2seg.data.io import read_json
from d2seg.errors import ConfigError, DatasetError
from d2seg.evaluation.evaluator import DatasetEvaluator, gather_to_main
from d2seg.utils.cropped_masks import CroppedMasks
from d2seg.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

Backend = Literal["pycocotools", "faster"]
IouType = Literal["bbox", "segm"]
BACKENDS: tuple[str, ...] = ("pycocotools", "faster")
# The six headline numbers of COCOeval.stats, under Detectron2's names.
AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# All twelve numbers of COCOeval.stats, as COCOeval.summarize() labels them.
COCO_STAT_NAMES = (
    "AP @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "AP @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "AP @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "AP @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "AP @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "AP @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "AR @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "AR @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


def _coco_classes(backend: str) -> tuple[type, type]:
    """(COCO, COCOeval) classes of ``backend``."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    raise ConfigError(
        f"COCO backend '{backend}' is unknown; fix: set TEST.COCO_BACKEND (or --backend) to one "
        f"of {', '.join(BACKENDS)}"
    )


def load_coco_gt(json_file: str | os.PathLike, backend: Backend = "pycocotools") -> Any:
    """Read, validate (``d2seg.data.coco.validate``) and index a COCO ground-truth file.

    Returns the backend's ``COCO`` object (pycocotools or faster-coco-eval). Stuff categories
    (``isthing: 0``, which the converter writes for label-map classes) are left out: they have
    no instances, and the evaluated classes are the instance classes.
    """
    coco_dict = read_json(json_file, "COCO ground-truth file")
    validate(coco_dict, str(json_file))
    coco_dict["categories"] = list(filter(is_thing, coco_dict["categories"]))
    coco_class, _ = _coco_classes(backend)
    coco_gt = coco_class()
    coco_gt.dataset = coco_dict
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt.createIndex()
    return coco_gt


def _segmentation_rle(segm: Any, height: int, width: int) -> dict:
    """A checked segmentation (polygons, uncompressed or compressed RLE) as compressed RLE."""
    if isinstance(segm, list):
        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_util.frPyObjects(segm, height, width)
    return segm


def _result_rle(segm: Any, where: str, height: int, width: int) -> dict:
    """A result's segmentation, checked, as JSON-ready compressed RLE at the image size."""
    check_segmentation(segm, where, height, width)
    rle = _segmentation_rle(segm, height, width)
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": list(rle["size"]), "counts": counts}


def validate_coco_results(
    results: Any, coco_gt: Any, iou_type: IouType, source: str
) -> list[dict]:
    """Check a COCO results list against its ground truth; return it ready for ``loadRes``.

    Each entry needs ``image_id`` (an image of ``coco_gt``), ``category_id`` (a category of
    ``coco_gt``), a numeric ``score`` and, for ``bbox``, ``bbox`` = 4 numbers [x, y, w, h] or,
    for ``segm``, ``segmentation`` (RLE at the image size, or polygons, which are merged into
    one RLE). Raises :class:`DatasetError` naming ``source``, the entry index and the fix.
    """
    if not isinstance(results, list):
        raise DatasetError(
            f"{source}: the top level is a {type(results).__name__}; fix: a COCO results file "
            f"is a list of {{image_id, category_id, score, bbox | segmentation}}"
        )
    checked = []
    for i, entry in enumerate(results):
        where = f"{source}: [{i}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where} is a {type(entry).__name__}, not an object; fix: use {{}}")
        required = ("image_id", "category_id", "score", "bbox" if iou_type == "bbox" else
                    "segmentation")
        for key in required:
            if key not in entry:
                raise DatasetError(f"{where} has no '{key}'; fix: add it (needed for {iou_type})")
        image = coco_gt.imgs.get(entry["image_id"])
        if image is None:
            raise DatasetError(
                f"{where}: image_id {entry['image_id']!r} is not an image of the ground truth; "
                f"fix: evaluate against the ground-truth file the detections were made on"
            )
        if entry["category_id"] not in coco_gt.cats:
            raise DatasetError(
                f"{where}: category_id {entry['category_id']!r} is not a category of the ground "
                f"truth (ids: {sorted(coco_gt.cats)}); fix: map the model's classes to these ids"
            )
        score = entry["score"]
        if type(score) not in (int, float) or not math.isfinite(score):
            raise DatasetError(f"{where}: score {score!r} is not a finite number; fix: correct it")
        out = {key: entry[key] for key in ("image_id", "category_id", "score")}
        if iou_type == "bbox":
            bbox = entry["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(
                    type(v) in (int, float) for v in bbox) and bbox[2] >= 0 and bbox[3] >= 0):
                raise DatasetError(
                    f"{where}: bbox {bbox!r} is not [x, y, width, height] with width, height "
                    f">= 0; fix: write XYWH pixels"
                )
            out["bbox"] = bbox
        else:
            out["segmentation"] = _result_rle(
                entry["segmentation"], where, image["height"], image["width"]
            )
        checked.append(out)
    return checked


def _nan_metrics(class_names: list[str]) -> dict[str, float]:
    return {key: float("nan") for key in [*AP_METRICS, *(f"AP-{c}" for c in class_names)]}


def evaluate_coco_predictions(
    coco_gt: Any,
    results: list[dict],
    iou_type: IouType,
    *,
    backend: Backend = "pycocotools",
    class_names: list[str] | None = None,
) -> tuple[dict[str, float], Any]:
    """Run COCOeval on checked ``results`` (see :func:`validate_coco_results`).

    Returns ``(metrics, cocoeval)``: metrics ×100 as Detectron2 (``AP, AP50, AP75, APs, APm,
    APl`` and ``AP-<class>`` over IoU 0.50:0.95, NaN for a class without ground truth), and the
    COCOeval object (``stats`` holds the twelve numbers as fractions, ``eval["precision"]`` the
    T×R×K×A×M precision array). Without results the metrics are NaN, a warning is logged and
    ``cocoeval`` is ``None``. ``coco_gt`` must come from the same ``backend``.
    """
    cat_ids = sorted(coco_gt.getCatIds())
    if class_names is None:
        class_names = [coco_gt.cats[c]["name"] for c in cat_ids]
    if not results:
        logger.warning("No %s predictions to evaluate: the metrics are NaN", iou_type)
        return _nan_metrics(class_names), None
    _, cocoeval_class = _coco_classes(backend)
    # Without "bbox", loadRes computes a segm detection's area from its mask, not its box.
    results = [
        {k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")} for r in results
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        if backend == "faster":
            coco_eval = cocoeval_class(coco_gt, coco_dt, iou_type, print_function=logger.debug)
        else:
            coco_eval = cocoeval_class(coco_gt, coco_dt, iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float(s) for s in coco_eval.stats[: len(COCO_STAT_NAMES)]]
    metrics = {
        name: stats[i] * 100 if stats[i] >= 0 else float("nan")
        for i, name in enumerate(AP_METRICS)
    }
    # precision: IoU thresholds × recall thresholds × classes × area ranges × max detections.
    precision = coco_eval.eval["precision"]
    for k, name in enumerate(class_names):
        per_class = precision[:, :, k, 0, -1]
        per_class = per_class[per_class > -1]
        metrics[f"AP-{name}"] = float(per_class.mean() * 100) if per_class.size else float("nan")
    return metrics, coco_eval


def instance_confusion_matrix(
    coco_gt: Any,
    results: list[dict],
    iou_type: IouType,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Which class each ground-truth object was detected as.

    Per image, detections with ``score >= score_threshold`` are matched greedily (highest score
    first) to the unmatched non-crowd ground truth of any class with the highest IoU
    ``>= iou_threshold`` (mask IoU for ``segm``, box IoU for ``bbox``). Detections that match
    only a crowd region are left out, as COCOeval ignores them.

    Returns:
        int64 (C+1)×(C+1) counts; row = ground-truth class, column = predicted class, in sorted
        category-id order; the last row/column is "background" (false positives in the last
        row, missed objects in the last column).
    """
    cat_index = {c: i for i, c in enumerate(sorted(coco_gt.getCatIds()))}
    background = len(cat_index)
    confusion = np.zeros((background + 1, background + 1), dtype=np.int64)
    detections_by_image = defaultdict(list)
    for r in results:
        if r["score"] >= score_threshold:
            detections_by_image[r["image_id"]].append(r)
    for image_id, image in coco_gt.imgs.items():
        gts = coco_gt.imgToAnns.get(image_id, [])
        dts = sorted(detections_by_image.get(image_id, []), key=lambda r: -r["score"])
        gt_classes = [cat_index[g["category_id"]] for g in gts]
        crowd = [int(g.get("iscrowd", 0)) for g in gts]
        if gts and dts:
            if iou_type == "segm":
                h, w = image["height"], image["width"]
                dt_geoms = [_segmentation_rle(d["segmentation"], h, w) for d in dts]
                gt_geoms = [_segmentation_rle(g["segmentation"], h, w) for g in gts]
            else:
                dt_geoms = [d["bbox"] for d in dts]
                gt_geoms = [g["bbox"] for g in gts]
            ious = np.asarray(mask_util.iou(dt_geoms, gt_geoms, crowd)).reshape(len(dts), len(gts))
        else:
            ious = np.zeros((len(dts), len(gts)))
        is_crowd = np.array(crowd, dtype=bool)
        matched = np.zeros(len(gts), dtype=bool)
        for d, dt in enumerate(dts):
            dt_class = cat_index[dt["category_id"]]
            candidates = np.flatnonzero(~matched & ~is_crowd)
            best = candidates[np.argmax(ious[d, candidates])] if candidates.size else None
            if best is not None and ious[d, best] >= iou_threshold:
                matched[best] = True
                confusion[gt_classes[best], dt_class] += 1
            elif not (ious[d, is_crowd] >= iou_threshold).any():
                confusion[background, dt_class] += 1
        for g in np.flatnonzero(~matched & ~is_crowd):
            confusion[gt_classes[g], background] += 1
    return confusion


def instances_to_coco_results(
    instances: dict[str, torch.Tensor], image_id: int, dataset_ids: list[int], with_masks: bool
) -> list[dict]:
    """One image's predicted instances as COCO results.

    Args:
        instances: ``boxes`` float N×4 XYXY pixels, ``scores`` N, ``classes`` long N (contiguous
            0..C-1), ``masks`` N×H×W (uint8/bool, or float probabilities thresholded at 0.5;
            or :class:`~d2seg.utils.cropped_masks.CroppedMasks`).
        dataset_ids: the COCO category id of each contiguous class.
        with_masks: encode ``masks`` as compressed RLE under ``segmentation``.

    Raises :class:`DatasetError` for a class outside 0..C-1 (model and dataset disagree).
    """
    boxes = instances["boxes"].detach().cpu().double().numpy()
    scores = instances["scores"].detach().cpu().tolist()
    classes = instances["classes"].detach().cpu().tolist()
    bad = [c for c in classes if not 0 <= c < len(dataset_ids)]
    if bad:
        raise DatasetError(
            f"image {image_id}: the model predicted class {bad[0]}, but the dataset has "
            f"{len(dataset_ids)} classes (0..{len(dataset_ids) - 1}); fix: set "
            f"MODEL.ROI_HEADS.NUM_CLASSES to the dataset's class count, or evaluate on the "
            f"dataset the model was trained for"
        )
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
    results = [
        {"image_id": image_id, "category_id": dataset_ids[c], "bbox": box, "score": score}
        for c, box, score in zip(classes, xywh, scores)
    ]
    if with_masks and results:
        for result, rle in zip(results, CroppedMasks.of(instances["masks"]).to_rle()):
            result["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return results


class COCOEvaluator(DatasetEvaluator):
    """Box and mask AP of a model's ``instances`` output, keyed like Detectron2.

    ``evaluate()`` returns ``{"bbox": {AP, AP50, AP75, APs, APm, APl, "AP-<class>"}, "segm":
    {...}}`` with every number ×100, and writes ``output_dir/coco_instances_results.json``.
    The ground truth is the dataset's ``json_file`` (from ``MetadataCatalog``) or ``gt_json``;
    the contiguous classes of the model map to the json's category ids in sorted order (or the
    metadata's ``thing_dataset_id_to_contiguous_id``).
    """

    def __init__(
        self,
        dataset_name: str | None = None,
        tasks: tuple[str, ...] = ("bbox", "segm"),
        output_dir: str | os.PathLike | None = None,
        *,
        backend: Backend = "pycocotools",
        gt_json: str | os.PathLike | None = None,
        class_names: list[str] | None = None,
    ):
        """
        Args:
            dataset_name: a name registered with ``register_coco_instances`` (gives
                ``json_file``, ``thing_classes``, ``thing_dataset_id_to_contiguous_id``).
            tasks: ``"bbox"`` and/or ``"segm"``.
            output_dir: where ``coco_instances_results.json`` goes (not written when ``None``).
            backend: ``"pycocotools"`` or ``"faster"`` (faster-coco-eval: same numbers, faster).
            gt_json: the ground-truth COCO file when there is no registered dataset.
            class_names: names for ``AP-<class>``; default: metadata, else the json's categories.
        """
        _coco_classes(backend)
        for task in tasks:
            if task not in ("bbox", "segm"):
                raise ConfigError(f"COCOEvaluator task '{task}' is unknown; fix: use bbox, segm")
        metadata = None
        if dataset_name is not None:
            from d2seg.data.catalog import MetadataCatalog

            metadata = MetadataCatalog.get(dataset_name)
            gt_json = gt_json or metadata.get("json_file")
        if gt_json is None:
            raise DatasetError(
                f"COCOEvaluator: dataset '{dataset_name}' has no COCO json_file; fix: register it "
                f"with register_coco_instances, or pass gt_json=PATH"
            )
        self._tasks = tuple(tasks)
        self._output_dir = output_dir
        self._backend = backend
        self._coco_gt = load_coco_gt(gt_json, backend)
        cat_ids = sorted(self._coco_gt.getCatIds())
        id_map = metadata.get("thing_dataset_id_to_contiguous_id") if metadata else None
        if id_map:
            self._dataset_ids = [d for d, _ in sorted(id_map.items(), key=lambda kv: kv[1])]
        else:
            self._dataset_ids = cat_ids
        names = class_names or (metadata.get("thing_classes") if metadata else None)
        self._class_names = list(names or [self._coco_gt.cats[c]["name"] for c in cat_ids])
        if not len(self._class_names) == len(self._dataset_ids) == len(cat_ids):
            raise DatasetError(
                f"COCOEvaluator: {gt_json} has {len(cat_ids)} categories but the metadata or "
                f"class_names give {len(self._class_names)} names and {len(self._dataset_ids)} "
                f"ids; fix: use one name per category of the json"
            )
        self._predictions: list[dict] = []
        self._coco_evals: dict[str, Any] = {}
        self._results: list[dict] = []

    @classmethod
    def from_config(
        cls, cfg: CfgNode, dataset_name: str, output_dir: str | os.PathLike | None = None
    ) -> dict[str, Any]:
        """Constructor arguments: tasks from ``MODEL.MASK_ON``, ``TEST.COCO_BACKEND``."""
        return {
            "dataset_name": dataset_name,
            "tasks": ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",),
            "output_dir": output_dir,
            "backend": cfg.TEST.COCO_BACKEND,
        }

    def reset(self) -> None:
        self._predictions = []
        self._coco_evals = {}
        self._results = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" in out:
                self._predictions.extend(
                    instances_to_coco_results(
                        out["instances"], inp["image_id"], self._dataset_ids,
                        with_masks="segm" in self._tasks,
                    )
                )

    def evaluate(self) -> dict[str, Any]:
        predictions = gather_to_main(self._predictions)
        if predictions is None:
            return {}
        unknown = {p["image_id"] for p in predictions} - set(self._coco_gt.imgs)
        if unknown:
            raise DatasetError(
                f"COCOEvaluator: image ids {sorted(unknown)[:5]} are not in the ground-truth json; "
                f"fix: evaluate the dataset registered with that json"
            )
        if self._output_dir is not None:
            atomic_write_json(
                os.path.join(self._output_dir, "coco_instances_results.json"), predictions
            )
        self._results = predictions
        results = {}
        for task in self._tasks:
            results[task], self._coco_evals[task] = evaluate_coco_predictions(
                self._coco_gt, predictions, task, backend=self._backend,
                class_names=self._class_names,
            )
        return results

    def report_inputs(self) -> dict[str, Any]:
        """Per-class precision arrays and the instance confusion matrix of the last evaluate."""
        task = "segm" if "segm" in self._tasks else "bbox"
        return {
            "thing_classes": self._class_names,
            "coco_evals": {t: e for t, e in self._coco_evals.items() if e is not None},
            "instance_confusion": instance_confusion_matrix(self._coco_gt, self._results, task),
        }
