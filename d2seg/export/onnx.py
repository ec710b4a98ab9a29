"""Trace d2seg models to ONNX with torch's TorchScript exporter; inspect the graphs.

Every graph takes ``"image"``: float32 N×C×H×W pixel values 0-255 in ``INPUT.FORMAT`` channel
order; normalisation by ``MODEL.PIXEL_MEAN/STD`` and the zero padding to the backbone's
``size_divisibility`` happen inside the graph, as in the PyTorch model.

* ``SemanticSegmentor`` → ``"logits"`` N×K×H×W at the input size.
* ``GeneralizedRCNN`` (batch 1) → ``"boxes"`` R×4 XYXY input pixels, ``"labels"`` R int64
  (torchvision's 1..NUM_CLASSES), ``"scores"`` R, and with ``MODEL.MASK_ON`` ``"masks"``
  R×1×28×28 foreground probabilities in box coordinates. R may be 0. The four arrays as a dict
  are exactly what :func:`d2seg.modeling.postprocess.detector_postprocess` takes, so
  ``detector_postprocess(outputs, (H, W), height, width)`` gives d2seg instances (0-based
  ``classes``, masks pasted into the image and thresholded) at any original size.

``torch.onnx.export(..., dynamo=False)``: the dynamo exporter fails on torchvision's detection
models (DESIGN §1).
"""

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from d2seg.errors import ConfigError
from d2seg.modeling.heads.implicit_point_rend import ImplicitPointRendMaskHead
from d2seg.modeling.heads.point_rend import PointRendMaskHead
from d2seg.modeling.meta_arch.rcnn import GeneralizedRCNN
from d2seg.modeling.meta_arch.semantic import SemanticSegmentor
from d2seg.modeling.preprocess import ImagePreprocessor
from d2seg.utils.io import atomic_open

INPUT_NAME = "image"
SEMANTIC_OUTPUT_NAME = "logits"
RCNN_OUTPUT_NAMES = ("boxes", "labels", "scores", "masks")
# RoiAlign's ``coordinate_transformation_mode`` (torchvision's aligned=False boxes) is opset 16.
MIN_OPSET = 16
# Node names follow module attribute paths below the exported wrapper: the trunk's nodes are
# "/backbone/...".
RCNN_TRUNK_NODE_PREFIX = "/backbone/"


def _size(images: Tensor, *, symbolic: bool) -> tuple:
    """The image height and width: traced values for a dynamic graph; plain ints for a static
    one, so the tracer records constants and no Shape/Mod arithmetic reaches the graph (the C++
    lowering accepts static graphs only)."""
    height, width = images.shape[-2], images.shape[-1]
    return (height, width) if symbolic else (int(height), int(width))


def _normalise_and_pad(
    preprocessor: ImagePreprocessor, images: Tensor, always_pad: bool
) -> Tensor:
    """N×C×H×W pixels → normalised, zero-padded to ``size_divisibility`` (padding after
    normalisation, as :class:`ImagePreprocessor` does). With symbolic sizes the Pad is always
    emitted; with static ones only when the size needs it, so no no-op Pad reaches the graph."""
    height, width = _size(images, symbolic=always_pad)
    divisor = max(preprocessor.size_divisibility, 1)
    pad_bottom = (divisor - height % divisor) % divisor
    pad_right = (divisor - width % divisor) % divisor
    normalised = (images - preprocessor.pixel_mean) / preprocessor.pixel_std
    if always_pad or pad_bottom or pad_right:
        normalised = F.pad(normalised, (0, pad_right, 0, pad_bottom))
    return normalised


class SemanticExportModel(nn.Module):
    """A traceable ``SemanticSegmentor``: N×C×H×W float pixels 0-255 → N×K×H×W logits."""

    def __init__(self, model: SemanticSegmentor, *, dynamic: bool):
        super().__init__()
        self.model = model
        self.dynamic = dynamic

    def forward(self, images: Tensor) -> Tensor:
        height, width = _size(images, symbolic=self.dynamic)
        padded = _normalise_and_pad(self.model.preprocessor, images, self.dynamic)
        logits = self.model.sem_seg_head.layers(self.model.backbone(padded))
        if self.dynamic or tuple(padded.shape[-2:]) != (height, width):
            logits = logits[:, :, :height, :width]
        return logits


class RCNNExportModel(nn.Module):
    """A traceable ``GeneralizedRCNN`` for one image: 1×C×H×W float pixels 0-255 →
    (boxes R×4, labels R, scores R[, masks R×1×28×28]) on the H×W image."""

    def __init__(self, model: GeneralizedRCNN, *, dynamic: bool):
        super().__init__()
        self.model = model
        self.dynamic = dynamic

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        height, width = image.shape[-2], image.shape[-1]
        padded = _normalise_and_pad(self.model.preprocessor, image, self.dynamic)
        images = ImageList(padded, [(height, width)])
        detections, _ = self.model.detect(images, self.model.backbone(padded), None)
        return tuple(detections[0][name] for name in RCNN_OUTPUT_NAMES if name in detections[0])


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for tracing; the model's own mode (train or eval) comes back afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _example_input(model: nn.Module, height: int, width: int, opset: int) -> Tensor:
    """The 1×C×height×width tensor to trace with, after checking the export arguments."""
    if opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset {opset} is too old; fix: use --opset {MIN_OPSET} or newer")
    if min(height, width) < 1:
        raise ConfigError(f"export size {height}x{width} is empty; fix: pass --height/--width ≥ 1")
    channels = model.preprocessor.pixel_mean.shape[0]
    return torch.full((1, channels, height, width), 128.0, device=model.device)


def _fold_static_graph(serialized: bytes) -> bytes:
    """onnxruntime's basic graph optimisations (constant folding, Identity removal) on a
    serialised static graph. The TorchScript exporter writes the pads of ``F.pad`` as
    ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast arithmetic on constants that its own
    constant folding leaves in place; after this, the Pad reads one constant. Basic-level
    rewrites produce standard ONNX ops only; the opset imports onnxruntime adds for its other
    domains are dropped again."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory(prefix="d2seg_onnx_") as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    used = {"", "ai.onnx", *(node.domain for node in model.graph.node)}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model.SerializeToString()


def _trace_to_onnx(
    module: nn.Module,
    example: Tensor,
    path: str | os.PathLike,
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
    *,
    fold_static: bool = False,
) -> Path:
    """``torch.onnx.export`` (TorchScript tracer, constant folding) into ``path`` atomically;
    ``fold_static`` also folds what the exporter left computed (:func:`_fold_static_graph`)."""
    buffer = io.BytesIO()
    with eval_mode(module), torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python value it freezes into the graph (sizes, the
        # torchvision detection code's scripted helpers); verification against PyTorch is what
        # tells whether a freeze was wrong, so the warnings are only noise to a user.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[INPUT_NAME],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
        )
    serialized = _fold_static_graph(buffer.getvalue()) if fold_static else buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(serialized))
    path = Path(path)
    with atomic_open(path, "wb") as f:
        f.write(serialized)
    return path


def export_semantic_onnx(
    model: SemanticSegmentor,
    *,
    height: int,
    width: int,
    path: str | os.PathLike,
    dynamic: bool = False,
    opset: int = 17,
) -> Path:
    """Export a ``SemanticSegmentor`` to ``path``; returns ``path``.

    Input ``"image"`` float32 pixels 0-255, output ``"logits"`` N×K×H×W. ``dynamic=False``:
    a static 1×C×``height``×``width`` graph, constant-folded, every Resize with constant scales
    and the size-divisibility Pad/Slice with constant pads/starts/ends, no shape arithmetic
    (what ``d2seg.export.edge`` lowers to C++). ``dynamic=True``: N, H and W are symbolic
    (``height``/``width`` only size the tracing example). The model's train/eval mode is kept.
    """
    head = model.sem_seg_head
    if dynamic and not head.supports_dynamic_shapes:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.NAME = {type(head).__name__!r} cannot be exported with dynamic "
            "shapes: its graph is only right at the traced size; fix: export a static graph "
            "(without --dynamic; --height/--width set its size)"
        )
    axes = {0: "batch", 2: "height", 3: "width"}
    return _trace_to_onnx(
        SemanticExportModel(model, dynamic=dynamic),
        _example_input(model, height, width, opset),
        path,
        [SEMANTIC_OUTPUT_NAME],
        {INPUT_NAME: axes, SEMANTIC_OUTPUT_NAME: axes} if dynamic else None,
        opset,
        fold_static=not dynamic,
    )


def check_rcnn_exportable(model: GeneralizedRCNN) -> None:
    """Raise :class:`ConfigError` for a ``GeneralizedRCNN`` whose graph would be wrong."""
    mask_head = model.roi_heads.mask_head
    if isinstance(mask_head, (PointRendMaskHead, ImplicitPointRendMaskHead)):
        raise ConfigError(
            f"MODEL.ROI_MASK_HEAD.NAME = {type(mask_head).__name__!r} cannot be exported to "
            "ONNX: its "
            "adaptive subdivision branches in Python on the number of detections, which the "
            "tracer freezes into the graph, so the graph is only right for the traced count; fix: "
            "serve PointRend from PyTorch, or export a MaskRCNNConvUpsampleHead model"
        )


def export_rcnn_onnx(
    model: GeneralizedRCNN,
    *,
    height: int,
    width: int,
    path: str | os.PathLike,
    dynamic: bool = False,
    opset: int = 17,
) -> Path:
    """Export a ``GeneralizedRCNN`` (batch 1) to ``path``; returns ``path``.

    Input ``"image"`` 1×C×``height``×``width`` float32 pixels 0-255 (``dynamic=True``: H and W
    symbolic); outputs as the module docstring. The score threshold, NMS and
    ``TEST.DETECTIONS_PER_IMAGE`` are the config's, inside the graph.
    """
    check_rcnn_exportable(model)
    example = _example_input(model, height, width, opset)
    with_masks = model.roi_heads.mask_head is not None
    names = list(RCNN_OUTPUT_NAMES if with_masks else RCNN_OUTPUT_NAMES[:3])
    axes = {name: {0: "detections"} for name in names}
    if dynamic:
        axes[INPUT_NAME] = {2: "height", 3: "width"}
    wrapper = RCNNExportModel(model, dynamic=dynamic)
    return _trace_to_onnx(wrapper, example, path, names, axes, opset)


def computed_resize_inputs(model: onnx.ModelProto) -> list[str]:
    """``"node: input"`` for every Resize roi/scales/sizes input that is computed in the graph
    (neither an initializer nor a Constant's output); empty for a lowerable static graph."""
    constants = {init.name for init in model.graph.initializer}
    constants.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return [
        f"{node.name}: {name}"
        for node in model.graph.node
        if node.op_type == "Resize"
        for name in node.input[1:]
        if name and name not in constants
    ]


def describe_graph(path: str | os.PathLike) -> dict:
    """``{"bytes", "opset", "inputs", "outputs"}``; each input/output ``{"name", "dtype",
    "shape"}`` with symbolic dimensions as their names."""
    model = onnx.load(str(path), load_external_data=False)

    def values(infos) -> list[dict]:
        return [
            {
                "name": info.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type).name,
                "shape": [
                    d.dim_param if d.dim_param else d.dim_value
                    for d in info.type.tensor_type.shape.dim
                ],
            }
            for info in infos
        ]

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "bytes": os.path.getsize(path),
        "opset": opset,
        "inputs": values(model.graph.input),
        "outputs": values(model.graph.output),
    }
