"""--target esp32s3's ESP-IDF component (no Xtensa toolchain here): its CMakeLists.txt is
configured by CMake with a stand-in ``idf_component_register`` and built with the host
compiler against an ``esp_attr.h`` that defines EXT_RAM_BSS_ATTR as ESP-IDF does: the arena
part that exceeds internal SRAM lands in .ext_ram.bss (PSRAM), the weights in .rodata (flash),
and the program writes the host build's mask."""

import subprocess

import numpy as np
import pytest
import torch

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.onnx import export_semantic_onnx
from d2seg.modeling import build_model

needs_cmake = pytest.mark.needs_tools("cmake", "g++")

# What an ESP-IDF build provides: idf_component_register (here: a static library of the SRCS
# with the INCLUDE_DIRS) and esp_attr.h's EXT_RAM_BSS_ATTR (a .ext_ram.bss section).
STAND_IN_PROJECT = """cmake_minimum_required(VERSION 3.13)
project(esp_idf_on_host CXX ASM)
set(CMAKE_CXX_STANDARD 17)
function(idf_component_register)
  cmake_parse_arguments(ARG "" "" "SRCS;INCLUDE_DIRS" ${ARGN})
  add_library(component STATIC ${ARG_SRCS})
  target_include_directories(component PUBLIC ${ARG_INCLUDE_DIRS} @STUBS@)
  set(COMPONENT_LIB component PARENT_SCOPE)
endfunction()
add_subdirectory(@COMPONENT@ component)
add_executable(prog @MODEL@/main.cpp)
target_link_libraries(prog PRIVATE component)
"""
ESP_ATTR = '#define EXT_RAM_BSS_ATTR __attribute__((section(".ext_ram.bss")))\n'


def _section_of(binary, symbol: str) -> str:
    """The section of the symbol whose (mangled) name contains ``symbol`` (objdump -t)."""
    table = subprocess.run(["objdump", "-t", str(binary)], capture_output=True, text=True,
                           check=True).stdout
    rows = [line.split() for line in table.splitlines()
            if line.split() and symbol in line.split()[-1]]
    assert rows, f"{symbol} not in {binary}"
    return next(f for f in rows[0][1:] if f.startswith(".") and f != ".hidden")


@needs_cmake
@pytest.mark.slow
def test_esp32s3_component_builds_with_the_arena_in_psram(tmp_path):
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_MNV3_small_gray_tiny.yaml")
    path = export_semantic_onnx(build_model(cfg).eval(), height=64, width=64,
                                path=tmp_path / "model.onnx")
    # float32 at 64x64: more activations than the 288 KiB of internal SRAM left for data.
    report = lower_onnx_to_cpp(path, tmp_path / "esp", name="car", target="esp32s3")
    regions = {r["name"]: r for r in report["regions"]}
    assert regions["SRAM"]["arena_bytes"] > 0 and regions["PSRAM"]["arena_bytes"] > 0
    component = tmp_path / "esp" / "esp_idf" / "car"
    assert "idf_component_register(" in (component / "CMakeLists.txt").read_text()
    assert "CONFIG_SPIRAM_ALLOW_BSS_SEG_EXTERNAL_MEMORY=y" in (
        tmp_path / "esp" / "esp_idf" / "sdkconfig.defaults").read_text()
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "esp_attr.h").write_text(ESP_ATTR)
    project = tmp_path / "project"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        STAND_IN_PROJECT.replace("@STUBS@", stubs.as_posix())
        .replace("@COMPONENT@", component.as_posix())
        .replace("@MODEL@", (tmp_path / "esp").as_posix()))
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(project), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    assert _section_of(build / "prog", "g_arena_PSRAM") == ".ext_ram.bss"
    assert _section_of(build / "prog", "car_weights") == ".rodata"

    lower_onnx_to_cpp(path, tmp_path / "host", name="car")
    subprocess.run(["make", "-s", "-C", str(tmp_path / "host"), "prog"], check=True,
                   capture_output=True)
    image = render_sample("carvana", seed=1, size=(64, 64), index=0)["image"].mean(axis=2)
    (tmp_path / "in.pgm").write_bytes(b"P5\n64 64\n255\n" + image.round().astype(np.uint8)
                                      .tobytes())
    for prog, mask in ((build / "prog", "esp.pgm"), (tmp_path / "host" / "prog", "host.pgm")):
        subprocess.run([str(prog), str(tmp_path / "in.pgm"), str(tmp_path / mask)], check=True)
    assert (tmp_path / "esp.pgm").read_bytes() == (tmp_path / "host.pgm").read_bytes()
