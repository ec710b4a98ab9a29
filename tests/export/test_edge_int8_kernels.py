"""The SIMD int8 convolution kernels (AVX2 at -march=haswell, whatever -march=native picks) give
bit-identical outputs to the portable kernel on shapes that hit every edge of the blocking:
odd K, K over one K-block (256), M not a multiple of the 6-row panel, output columns over one
column block (256) and not a multiple of the tile width, groups, stride, depthwise. The
requantisation (AVX2) and the Cortex-M DSP depthwise rows are also run directly on edge values
by kernel_check.cpp, on the host and on a Cortex-M7 in QEMU."""

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.boards import ARM_FLAGS, board_files
from d2seg.export.edge.harness import build_program, load_model

pytestmark = pytest.mark.needs_tools("g++")

H, W = 19, 21  # 399 output pixels: two column blocks, the last tile partial
# (name, in channels, out channels, kernel, attributes): K = 147, 333, 13, 2 x 63, 13 x 9.
LAYERS = (("c1", 3, 37, 7, dict(pads=[3, 3, 3, 3])),
          ("c2", 37, 13, 3, dict(pads=[1, 1, 1, 1])),
          ("c3", 13, 14, 1, {}),
          ("c4", 14, 10, 3, dict(group=2, pads=[1, 1, 1, 1], strides=[2, 2])),
          ("c5", 10, 10, 3, dict(group=10, pads=[1, 1, 1, 1])))


def _cpu_has(flag: str) -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and flag in cpuinfo.read_text().split()


def _conv_stack(path: Path) -> Path:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for name, c, m, k, attrs in LAYERS:
        fan_in = c // attrs.get("group", 1) * k * k
        w = (rng.standard_normal((m, c // attrs.get("group", 1), k, k)) / np.sqrt(fan_in))
        inits += [numpy_helper.from_array(w.astype(np.float32), f"{name}_w"),
                  numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), f"{name}_b")]
        nodes += [helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_y"], **attrs),
                  helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"])]
        x = f"{name}_r"
    nodes[-1] = helper.make_node("Identity", ["c5_y"], ["y"])
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    return path


def _lowered_int8_stack(tmp_path: Path) -> list[np.ndarray]:
    """The int8 conv stack lowered into tmp_path/int8; returns its 3 calibration images."""
    path = _conv_stack(tmp_path / "convs.onnx")
    rng = np.random.default_rng(1)
    calib = tmp_path / "calib"
    calib.mkdir()
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(calib / f"{i}.png")
    lower_onnx_to_cpp(path, tmp_path / "int8", name="convs", int8=True, calib_dir=calib)
    return images


# A main that runs the model on raw float32 input (file argv[1]) and writes its raw float32
# output (argv[2]): every output value is compared, not only the mask's argmax.
DUMP_MAIN = r"""#include <cstdio>
#include "convs.h"
static float input[CONVS_INPUT_C * CONVS_INPUT_H * CONVS_INPUT_W];
static float output[CONVS_OUTPUT_C * CONVS_OUTPUT_H * CONVS_OUTPUT_W];
int main(int, char** argv) {
  std::FILE* in = std::fopen(argv[1], "rb");
  if (!in || std::fread(input, sizeof input, 1, in) != 1) return 2;
  std::fclose(in);
  if (convs_run(input, output) != 0) return 3;
  std::FILE* out = std::fopen(argv[2], "wb");
  return out && std::fwrite(output, sizeof output, 1, out) == 1 && std::fclose(out) == 0 ? 0 : 4;
}
"""
AARCH64 = ("aarch64-linux-gnu-g++", "qemu-aarch64")
# -march → (the by-element multiply-accumulate only that NEON kernel uses, so the build did take
# it, not the generic vectors; QEMU's -cpu).
NEON_BUILDS = {"armv8-a": (r"smlal\tv\d+\.4s, v\d+\.4h, v\d+\.h\[", "cortex-a53"),
               "armv8.2-a+dotprod": (r"sdot\tv\d+\.4s, v\d+\.16b, v\d+\.4b\[", "max")}


@pytest.mark.needs_tools(*AARCH64)
def test_neon_int8_convolutions_under_qemu_aarch64_match_the_host_bit_for_bit(tmp_path):
    """The NEON (vmlal) and NEON dotprod (sdot) kernels, cross-built for aarch64 and run in
    user-mode QEMU, give the x86 host build's outputs (the portable kernel) bit for bit."""
    images = _lowered_int8_stack(tmp_path)
    folder = tmp_path / "int8"
    (folder / "main.cpp").write_text(DUMP_MAIN)
    host = build_program(folder, tmp_path / "host", flags=("-O1",))
    progs = {}
    for march, (instruction, cpu) in NEON_BUILDS.items():
        prog = build_program(folder, tmp_path / f"prog-{march}", cxx=AARCH64[0],
                             flags=("-O2", f"-march={march}"))
        disassembly = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(prog)], check=True,
                                     capture_output=True, text=True).stdout
        assert re.search(instruction, disassembly), f"-march={march} build lacks {instruction}"
        progs[march] = [AARCH64[1], "-cpu", cpu, "-L", "/usr/aarch64-linux-gnu", str(prog)]
    for i, image in enumerate(images):
        x = tmp_path / f"x{i}.bin"
        x.write_bytes(image.transpose(2, 0, 1).astype(np.float32).tobytes())
        subprocess.run([str(host), str(x), str(tmp_path / "host.bin")], check=True)
        expected = np.fromfile(tmp_path / "host.bin", np.float32)
        assert np.unique(expected).size > 16  # the outputs are not saturated constants
        for march, command in progs.items():
            out = tmp_path / f"{march}.bin"
            subprocess.run([*command, str(x), str(out)], check=True, timeout=120)
            np.testing.assert_array_equal(np.fromfile(out, np.float32), expected, err_msg=march)


def test_simd_int8_convolutions_are_bit_identical_to_the_portable_kernel(tmp_path):
    images = _lowered_int8_stack(tmp_path)
    portable = load_model(tmp_path / "int8", flags=("-O1",))
    builds = [load_model(tmp_path / "int8", flags=("-O2", "-march=native"))]
    if _cpu_has("avx2"):
        builds.append(load_model(tmp_path / "int8", flags=("-O2", "-march=haswell")))
    for image in images:
        x = image.transpose(2, 0, 1)[None].astype(np.float32)
        expected = portable(x)
        assert np.unique(expected).size > 16  # the outputs are not saturated constants
        for build in builds:
            np.testing.assert_array_equal(build(x), expected)


KERNEL_CHECK = Path(__file__).with_name("kernel_check.cpp")
RUNTIME = Path(__file__).parents[2] / "deploy" / "runtime"


def _kernel_check_output(folder: Path, flags: tuple[str, ...]) -> bytes:
    """kernel_check.cpp's output bytes built on the host with ``flags``."""
    exe = folder / "kernel_check"
    subprocess.run(["g++", "-std=c++17", *flags, f"-I{RUNTIME}", str(KERNEL_CHECK), "-o",
                    str(exe)], check=True)
    subprocess.run([str(exe), str(folder / "out.bin")], check=True)
    return (folder / "out.bin").read_bytes()


@pytest.mark.skipif(not _cpu_has("avx2"), reason="needs an AVX2 CPU")
def test_avx2_requantisation_and_depthwise_match_the_portable_build(tmp_path):
    (tmp_path / "portable").mkdir()
    (tmp_path / "avx2").mkdir()
    expected = _kernel_check_output(tmp_path / "portable", ("-O1",))
    assert len(set(expected)) > 64  # not saturated constants
    assert _kernel_check_output(tmp_path / "avx2", ("-O2", "-march=haswell")) == expected


ARM_TOOLS = ("arm-none-eabi-g++", "qemu-system-arm")


@pytest.mark.needs_tools(*ARM_TOOLS)
def test_cortex_m7_dsp_depthwise_matches_the_portable_build_in_qemu(tmp_path):
    for rel, text in board_files("cortex-m7-qemu", "kernel_check").items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    subprocess.run(["arm-none-eabi-g++", "-std=c++17", *ARM_FLAGS.split(), "-fno-exceptions",
                    "-fno-rtti", f"-I{RUNTIME}", str(KERNEL_CHECK), "board/startup.cpp",
                    "-T", "board/cortex_m7.ld", "--specs=rdimon.specs", "-nostartfiles",
                    "-Wl,--gc-sections", "-Wl,--no-warn-execstack", "-o", "check.elf"],
                   cwd=tmp_path, check=True)
    disassembly = subprocess.run(["arm-none-eabi-objdump", "-d", "check.elf"], cwd=tmp_path,
                                 check=True, capture_output=True, text=True).stdout
    assert "smlad" in disassembly  # the DSP path was compiled in
    subprocess.run(["qemu-system-arm", "-M", "mps2-an500", "-nographic", "-monitor", "none",
                    "-serial", "none", "-semihosting-config",
                    "enable=on,target=native,arg=prog,arg=m7.bin", "-kernel", "check.elf"],
                   cwd=tmp_path, check=True, timeout=300)
    (tmp_path / "portable").mkdir()
    assert (tmp_path / "m7.bin").read_bytes() == _kernel_check_output(tmp_path / "portable",
                                                                      ("-O1",))
