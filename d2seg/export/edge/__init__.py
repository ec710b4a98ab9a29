"""Lowering of static ONNX segmentation graphs to dependency-free C++17 (edge devices).

``lower_onnx_to_cpp(onnx_path, output_dir, name=..., int8=..., calib_dir=..., target=...)``
writes ``{name}.h/.cpp`` (a static arena planned at generation time, entry point
``extern "C" int {name}_run(const float* input, float* output)``), ``{name}_weights.bin/.S``
(the constants, linked with ``.incbin``), ``main.cpp``, ``Makefile``, ``CMakeLists.txt``,
``report.json`` and, for a microcontroller target, ``board/``. Stages: :mod:`.ir` (read ONNX),
:mod:`.passes` (BatchNorm/constant folding, fusion), :mod:`.quantize` (int8), :mod:`.planner`
(arena, across :mod:`.targets`' memory regions), :mod:`.emit` (C++), :mod:`.boards` (Cortex-M7
/ QEMU project), :mod:`.report`; :mod:`.harness` builds and calls the result from Python.
"""

from d2seg.export.edge.lower import lower_onnx_to_cpp

__all__ = ["lower_onnx_to_cpp"]
