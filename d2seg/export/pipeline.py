"""``export_model``: every ONNX file of a model, verified, plus ``export_report.json``, in one
folder written atomically (what ``deploy/export_onnx.py`` runs)."""

import os
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from d2seg.config import CfgNode
from d2seg.data.transforms import shortest_edge_output_size
from d2seg.errors import ConfigError, ExportError
from d2seg.export.onnx import (
    RCNN_TRUNK_NODE_PREFIX,
    computed_resize_inputs,
    describe_graph,
    eval_mode,
    export_rcnn_onnx,
    export_semantic_onnx,
)
from d2seg.export.fp16 import convert_to_fp16
from d2seg.export.samples import resize_image, sample_images
from d2seg.export.verify import FP16_TOLERANCE, check_rcnn, check_semantic, check_semantic_fp16
from d2seg.utils.io import atomic_directory, atomic_write_json

REPORT_NAME = "export_report.json"


def default_export_size(cfg: CfgNode) -> tuple[int, int]:
    """(height, width) of the static graph when none is given: ``INPUT.MIN_SIZE_TEST`` square,
    the size the test-time mapper resizes the shorter side to."""
    side = cfg.INPUT.MIN_SIZE_TEST
    if side <= 0:
        raise ConfigError(
            "INPUT.MIN_SIZE_TEST is 0 (no test resizing), so the export size is unknown; fix: "
            "pass --height and --width"
        )
    return side, side


def _test_time_images(cfg: CfgNode, images: list[np.ndarray]) -> list[np.ndarray]:
    """Samples at the size the test-time mapper gives them (``INPUT.MIN/MAX_SIZE_TEST``), what
    a dynamic graph is fed in deployment; as they are when test resizing is off."""
    if cfg.INPUT.MIN_SIZE_TEST <= 0:
        return list(images)
    sizes = [
        shortest_edge_output_size(*im.shape[:2], cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        for im in images
    ]
    return [resize_image(im, *size) for im, size in zip(images, sizes)]


def _other_size(height: int, width: int) -> tuple[int, int]:
    """A second size for the dynamic graph, off the size divisibility so that the in-graph
    padding and cropping are exercised."""
    return height // 2 + 7, width + 9


def _check_static_resizes(path: Path) -> None:
    computed = computed_resize_inputs(onnx.load(str(path)))
    if computed:
        raise ExportError(
            f"{path}: Resize inputs computed in the graph ({'; '.join(computed)}), which the C++ "
            f"lowering cannot take; fix: report the config as a d2seg export bug"
        )


def _export_semantic(
    cfg: CfgNode, model: nn.Module, folder: Path, images: list[np.ndarray],
    size: tuple[int, int], dynamic: bool, fp16: bool, opset: int,
) -> dict:
    height, width = size
    checks = {}
    static_batches = [[resize_image(im, height, width)] for im in images]
    path = export_semantic_onnx(
        model, height=height, width=width, path=folder / "model.onnx", opset=opset
    )
    _check_static_resizes(path)
    checks[path.name] = check_semantic(model, path, static_batches)
    if dynamic:
        path = export_semantic_onnx(
            model, height=height, width=width, path=folder / "model_dynamic.onnx", dynamic=True,
            opset=opset,
        )
        other = _other_size(height, width)
        batches = [[im] for im in _test_time_images(cfg, images)]
        batches.append([resize_image(im, *other) for im in images[:2]])
        checks[path.name] = check_semantic(model, path, batches)
    if fp16:
        path = convert_to_fp16(folder / "model.onnx", folder / "model_fp16.onnx")
        checks[path.name] = check_semantic_fp16(model, path, static_batches)
    return checks


def _export_rcnn(
    cfg: CfgNode, model: nn.Module, folder: Path, images: list[np.ndarray],
    size: tuple[int, int], dynamic: bool, fp16: bool, opset: int,
) -> dict:
    height, width = size
    checks = {}
    # A blank image: the graph must also run when it yields few or no detections.
    blank = np.zeros_like(resize_image(images[0], height, width))
    static_images = [resize_image(im, height, width) for im in images] + [blank]
    path = export_rcnn_onnx(
        model, height=height, width=width, path=folder / "model.onnx", opset=opset
    )
    checks[path.name] = check_rcnn(model, path, static_images)
    if dynamic:
        path = export_rcnn_onnx(
            model, height=height, width=width, path=folder / "model_dynamic.onnx", dynamic=True,
            opset=opset,
        )
        other = resize_image(images[0], *_other_size(height, width))
        checks[path.name] = check_rcnn(model, path, _test_time_images(cfg, images) + [other])
    if fp16:
        path = convert_to_fp16(
            folder / "model.onnx", folder / "model_fp16.onnx", fp16_prefix=RCNN_TRUNK_NODE_PREFIX
        )
        checks[path.name] = check_rcnn(model, path, static_images, FP16_TOLERANCE)
    return checks


# The graph to export, by the tasks a meta-architecture declares.
EXPORTERS = {("sem_seg",): _export_semantic, ("instances",): _export_rcnn}


def export_model(
    cfg: CfgNode,
    model: nn.Module,
    output_dir: str | os.PathLike,
    *,
    height: int | None = None,
    width: int | None = None,
    dynamic: bool = False,
    fp16: bool = False,
    samples_dir: str | os.PathLike | None = None,
    opset: int = 17,
) -> dict:
    """Export ``model`` (built from ``cfg``, weights loaded) into the new folder ``output_dir``.

    Writes ``model.onnx`` (static 1×C×height×width; default size :func:`default_export_size`),
    with ``dynamic`` also ``model_dynamic.onnx`` (semantic: N, H, W symbolic; R-CNN: H, W), with
    ``fp16`` also ``model_fp16.onnx`` (R-CNN: only the trunk in fp16), each checked against
    PyTorch with onnxruntime on :func:`~d2seg.export.samples.sample_images` (R-CNN also on a
    blank image), and ``export_report.json``
    (the checks' numbers, opset, input/output names and shapes, file sizes), which it returns.
    Any failed check raises :class:`ExportError` and ``output_dir`` is not created. The model
    is moved to the CPU; its train/eval mode is kept.
    """
    output_dir = Path(output_dir)
    if (height is None) != (width is None):
        raise ConfigError("--height and --width go together; fix: pass both or neither")
    size = (height, width) if height is not None else default_export_size(cfg)
    tasks = tuple(getattr(model, "tasks", ()))
    if tasks not in EXPORTERS:
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {type(model).__name__} has no ONNX export (its tasks: "
            f"{list(tasks)}); fix: export a model whose tasks are one of {list(map(list, EXPORTERS))} "
            f"(e.g. SemanticSegmentor or GeneralizedRCNN)"
        )
    model = model.cpu()
    images, source = sample_images(cfg, samples_dir, *size)
    with eval_mode(model), atomic_directory(output_dir, what="--output") as folder:
        export = EXPORTERS[tasks]
        checks = export(cfg, model, folder, images, size, dynamic, fp16, opset)
        report = {
            "meta_architecture": type(model).__name__,
            "input_format": cfg.INPUT.FORMAT,
            "opset": opset,
            "height": size[0],
            "width": size[1],
            "samples": source,
            "files": {name: describe_graph(folder / name) for name in checks},
            "checks": checks,
        }
        atomic_write_json(folder / REPORT_NAME, report, indent=2)
    return report
