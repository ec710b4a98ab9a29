"""Export trained models to ONNX and check the graphs against PyTorch with onnxruntime.

Public API (see :mod:`d2seg.export.onnx`):

* ``export_semantic_onnx(model, *, height, width, path, dynamic=False, opset=17) -> Path``:
  a ``SemanticSegmentor`` as ONNX. Input ``"image"``: float32 N×C×H×W pixel values 0-255 in
  ``INPUT.FORMAT`` channel order (normalisation is inside the graph); output ``"logits"``:
  float32 N×K×H×W at the input size. ``dynamic=False`` gives the static 1×C×height×width,
  constant-folded graph the C++ lowering (``d2seg.export.edge``) consumes: every Resize takes
  constant scales/sizes. ``dynamic=True`` makes N, H and W symbolic (for onnxruntime).
* ``export_rcnn_onnx(model, *, height, width, path, dynamic=False, opset=17) -> Path``: a
  ``GeneralizedRCNN`` (batch 1), input ``"image"`` float32 1×C×H×W pixels 0-255 (``dynamic``:
  H, W symbolic); outputs ``"boxes"`` R×4 XYXY input pixels, ``"labels"`` R int64
  (torchvision's 1..NUM_CLASSES), ``"scores"`` R and, with masks, ``"masks"`` R×1×28×28
  probabilities in box coordinates; R may be 0. As a dict they are what
  :func:`d2seg.modeling.postprocess.detector_postprocess` takes to paste the masks and give
  0-based classes at the original size. PointRend raises ConfigError (not traceable).
* ``convert_to_fp16(src, dst, *, fp16_prefix=None) -> Path`` (:mod:`d2seg.export.fp16`): fp16
  graph with fp32 inputs/outputs; Resize kept fp32; with ``fp16_prefix`` only those nodes
  (the detection trunk), so detection post-processing stays fp32.
* ``computed_resize_inputs(onnx_model) -> list[str]``: Resize inputs computed in the graph
  (empty for a graph the C++ lowering can take).
* ``export_model(cfg, model, output_dir, *, height=None, width=None, dynamic=False, fp16=False,
  samples_dir=None, opset=17) -> dict``: every file, each verified against PyTorch with
  onnxruntime, plus ``export_report.json``, in a folder written atomically (what
  ``deploy/export_onnx.py`` runs).
"""

from d2seg.export.fp16 import convert_to_fp16
from d2seg.export.onnx import (
    computed_resize_inputs,
    export_rcnn_onnx,
    export_semantic_onnx,
)
from d2seg.export.pipeline import export_model

__all__ = [
    "computed_resize_inputs",
    "convert_to_fp16",
    "export_model",
    "export_rcnn_onnx",
    "export_semantic_onnx",
]
