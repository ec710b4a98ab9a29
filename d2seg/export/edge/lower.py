"""ONNX → C++: read, optimise, (optionally) quantise, plan, emit and write the folder."""

import re
from pathlib import Path

from d2seg.errors import ConfigError
from d2seg.export.edge.emit import emit_model
from d2seg.export.edge.ir import load_onnx
from d2seg.export.edge.passes import optimize
from d2seg.export.edge.boards import board_files
from d2seg.export.edge.project import cmake_lists, main_buffer_bytes, main_source, makefile
from d2seg.export.edge.quantize import (binary_mask_output, calibrate,
                                        load_calibration_images, quantize_graph)
from d2seg.export.edge.report import lowering_report
from d2seg.export.edge.targets import get_target
from d2seg.utils.io import atomic_directory, atomic_write_json


def lower_onnx_to_cpp(
    onnx_path: str | Path,
    output_dir: str | Path,
    *,
    name: str = "model",
    int8: bool = False,
    calib_dir: str | Path | None = None,
    calib_method: str = "minmax",
    mask_output: bool = False,
    target: str = "host",
    calib_pad_value: float | None = None,
) -> dict:
    """Write ``output_dir``/{name}.h, {name}.cpp, {name}_weights.bin/.S (the constants, linked
    with ``.incbin``), main.cpp, Makefile, CMakeLists.txt,
    report.json.

    Args:
        onnx_path: a static ONNX graph, input float32 1×C×H×W pixels 0-255.
        output_dir: must not exist; written atomically.
        name: C identifier prefix of the generated files and entry point ``{name}_run``.
        int8: quantise (needs ``calib_dir``, a folder of representative images, searched
            recursively).
        calib_method: how activation ranges are chosen from the calibration images
            (:data:`d2seg.export.edge.quantize.CALIB_METHODS`: minmax, percentile, mse).
        mask_output: (int8 one-logit models) output the mask, class 1 where the int8 logit
            is above its zero point, instead of the dequantised logit: no float after the
            graph.
        target: memory profile (:data:`d2seg.export.edge.targets.TARGETS`): the arena is
            placed in its RAM regions, the weights checked against its flash budget, and a
            board project written next to the model (stm32h743: linker script, startup code
            and ``make qemu`` for a Cortex-M7 in QEMU).
        calib_pad_value: letterbox the calibration images with this pixel value (aspect kept,
            as ``deploy/to_pnm.py --keep-aspect`` feeds the model) instead of stretching them;
            recorded in the report as ``input_fit``.
    Returns:
        The report (also ``report.json``): weights/arena/lower-bound/naive bytes, MACs and
        device fit.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"--name {name!r} is not a C identifier; fix: use letters, digits "
                          f"and underscores, e.g. unet_r18")
    if int8 and calib_dir is None:
        raise ConfigError("--int8 needs --calib IMAGES_DIR; fix: pass a folder of images for "
                          "calibration")
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise ConfigError(f"--output {output_dir} already exists; fix: choose a new folder or "
                          f"remove the old one")
    graph = optimize(load_onnx(onnx_path), fuse_residual_add=not int8)
    input_shape = graph.shapes[graph.inputs[0]]
    output_shape = graph.shapes[graph.outputs[0]] if graph.outputs[0] in graph.shapes else ()
    if len(input_shape) != 4 or len(output_shape) != 4:
        raise ConfigError(f"{onnx_path}: input {input_shape} / output {output_shape} are not "
                          f"N×C×H×W; fix: export the semantic model (image in, logits out)")
    if int8:
        images = load_calibration_images(calib_dir, input_shape, calib_pad_value)
        quantize_graph(graph, calibrate(onnx_path, graph, images, method=calib_method))
    if mask_output:
        binary_mask_output(graph, str(onnx_path))
    profile = get_target(target)
    io_bytes = main_buffer_bytes(input_shape, output_shape)
    regions = {r.name: (r.size - r.reserved - (io_bytes if r.name == profile.io_region else 0),
                        r.attribute) for r in profile.regions}
    model = emit_model(graph, name, Path(onnx_path).name, regions, target)
    if profile.flash_budget and model.weights_bytes > profile.flash_budget:
        raise ConfigError(
            f"{onnx_path}: {model.weights_bytes:,} bytes of weights exceed the "
            f"{profile.flash_budget:,}-byte flash budget of --target {target}; fix: lower with "
            f"--int8 (4x smaller) or train a narrower model")
    report = lowering_report(model, name=name, precision="int8" if int8 else "float32",
                             calib_method=calib_method if int8 else None,
                             calib_pad_value=calib_pad_value if int8 else None,
                             input_shape=input_shape, output_shape=output_shape,
                             target=profile, io_bytes=io_bytes)
    with atomic_directory(output_dir) as tmp:
        (tmp / f"{name}.h").write_text(model.header)
        (tmp / f"{name}.cpp").write_text(model.source)
        (tmp / f"{name}_weights.bin").write_bytes(model.weights)
        (tmp / f"{name}_weights.S").write_text(model.assembly)
        (tmp / "main.cpp").write_text(main_source(name))
        (tmp / "CMakeLists.txt").write_text(cmake_lists(name))
        (tmp / "Makefile").write_text(makefile(name, profile.board))
        for relative, text in board_files(profile.board, name, profile).items():
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp / relative).write_text(text)
        atomic_write_json(tmp / "report.json", report, indent=2)
    return report
