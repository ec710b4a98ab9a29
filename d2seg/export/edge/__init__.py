"""Lowering of static ONNX segmentation graphs to dependency-free C++17 (edge devices).

``lower_onnx_to_cpp(onnx_path, output_dir, name=..., int8=..., calib_dir=...) -> dict`` writes
``{name}.h/.cpp`` (constants in one aligned blob, one static arena planned at generation time,
entry point ``extern "C" int {name}_run(const float* input, float* output)``), ``main.cpp``,
``CMakeLists.txt`` and ``report.json``. Stages: :mod:`.ir` (read ONNX), :mod:`.passes`
(BatchNorm/constant folding, fusion), :mod:`.quantize` (int8), :mod:`.planner` (arena),
:mod:`.emit` (C++), :mod:`.report`; :mod:`.harness` builds and calls the result from Python.
"""

from d2seg.export.edge.lower import lower_onnx_to_cpp

__all__ = ["lower_onnx_to_cpp"]
