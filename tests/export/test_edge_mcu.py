"""--target stm32h743: the MobileNetV3 U-Net's int8 lowering placed in the H743's RAM regions,
built with arm-none-eabi-g++ for a Cortex-M7 and run in QEMU (mps2-an500, semihosting): its
masks are bit-identical to the host build's; budgets and the refusal of a model that does not
fit. The toolchain comes from `make arm-deps` (which `make test` runs)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.errors import ConfigError
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.boards import QEMU_INSTRUCTIONS_PER_TICK, elf_memory, run_ticks
from d2seg.export.edge.harness import load_model
from d2seg.export.onnx import export_semantic_onnx
from d2seg.modeling import build_model

REPO = Path(__file__).resolve().parents[2]
ARM_TOOLS = ("arm-none-eabi-g++", "arm-none-eabi-size", "qemu-system-arm", "g++", "make")
needs_arm = pytest.mark.needs_tools(*ARM_TOOLS)
KIB = 1024


def _gray(index: int, size: int) -> np.ndarray:
    rgb = render_sample("carvana", seed=4, size=(size, size), index=index)["image"]
    return rgb.mean(axis=2).round().astype(np.uint8)


@pytest.fixture(scope="module")
def mcu_onnx(tmp_path_factory):
    """configs/edge's MCU model (MobileNetV3-Small x0.5 U-Net, gray, one logit) at 128×128,
    random init in eval mode, with calibration images in a nested folder."""
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs/edge/unet_MNV3_small_gray_128.yaml"))
    root = tmp_path_factory.mktemp("mcu")
    path = export_semantic_onnx(build_model(cfg).eval(), height=128, width=128,
                                path=root / "model.onnx")
    calib = root / "calib" / "train"
    calib.mkdir(parents=True)
    for index in range(3):
        Image.fromarray(_gray(index, 128)).save(calib / f"{index}.png")
    return path, root / "calib"


def test_stm32h743_lowering_places_the_arena_in_its_regions(mcu_onnx, tmp_path):
    path, calib = mcu_onnx
    report = lower_onnx_to_cpp(path, tmp_path / "m7", name="car", int8=True, calib_dir=calib,
                               target="stm32h743")
    regions = {r["name"]: r for r in report["regions"]}
    assert list(regions) == ["DTCM", "AXI_SRAM", "SRAM123"]
    assert all(r["left_bytes"] >= 0 for r in regions.values())
    assert regions["DTCM"]["arena_bytes"] > 0  # the fastest region is used first
    assert report["arena_bytes"] <= 448 * KIB and report["weights_bytes"] <= 1536 * KIB
    source = (tmp_path / "m7" / "car.cpp").read_text()
    assert '__attribute__((section(".bss.d2seg_dtcm")))' in source
    for name in ("board/cortex_m7.ld", "board/startup.cpp", "board/arm-none-eabi.cmake"):
        assert (tmp_path / "m7" / name).is_file()
    printed = subprocess.run(
        [sys.executable, "deploy/lower_to_cpp.py", str(path), "--output", str(tmp_path / "cli"),
         "--int8", "--calib", str(calib), "--target", "stm32h743"],
        capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "DTCM" in printed and "AXI_SRAM" in printed and "left" in printed


def test_model_that_does_not_fit_names_its_peak_and_the_fix(tmp_path):
    """The R-18 tiny U-Net at 256×256 in float: several MiB of activations."""
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs/tiny/unet_R_18_gray_binary_tiny.yaml"))
    path = export_semantic_onnx(build_model(cfg).eval(), height=256, width=256,
                                path=tmp_path / "big.onnx")
    with pytest.raises(ConfigError) as error:
        lower_onnx_to_cpp(path, tmp_path / "out", target="stm32h743")
    message = str(error.value)
    assert "largest live set" in message and "node '" in message
    assert "smaller input (about" in message and "width multiplier" in message
    assert not (tmp_path / "out").exists()


@needs_arm
@pytest.mark.slow
def test_cortex_m7_build_in_qemu_writes_the_host_mask_bit_for_bit(mcu_onnx, tmp_path):
    path, calib = mcu_onnx
    folder = tmp_path / "m7"
    # The int8 mask output stage, as make demo-mcu lowers it: no float after the graph.
    macs = lower_onnx_to_cpp(path, folder, name="car", int8=True, calib_dir=calib,
                             calib_method="mse", mask_output=True, target="stm32h743")["macs"]
    subprocess.run(["make", "-s", "-C", str(folder), "prog", "prog.elf"], check=True,
                   capture_output=True)
    memory = elf_memory((folder / "size.txt").read_text())
    assert memory["flash_bytes"] <= 1536 * KIB
    for name, used in memory["regions"].items():
        assert used <= memory["region_bytes"][name], name
    compiled = load_model(folder, flags=("-O1",))
    for index in (10, 11):
        image = _gray(index, 128)
        (folder / "in.pgm").write_bytes(b"P5\n128 128\n255\n" + image.tobytes())
        # qemu-count: -icount shift=0, so the program's SysTick line counts instructions.
        run = subprocess.run(["make", "-s", "-C", str(folder), "qemu-count", "IN=in.pgm",
                              "OUT=m7.pgm"], check=True, capture_output=True, text=True,
                             timeout=600)
        # Fewer instructions than MACs would mean a broken count (SysTick not running).
        assert run_ticks(run.stdout + run.stderr) * QEMU_INSTRUCTIONS_PER_TICK > macs
        subprocess.run(["./prog", "in.pgm", "host.pgm"], cwd=folder, check=True)
        m7, host = (folder / "m7.pgm").read_bytes(), (folder / "host.pgm").read_bytes()
        assert m7 == host
        classes = compiled(image[None, None].astype(np.float32))
        expected = np.where(classes[0, 0] == 1, 255, 0).astype(np.uint8)
        np.testing.assert_array_equal(np.frombuffer(m7[-128 * 128:], np.uint8).reshape(128, 128),
                                      expected)
    result = subprocess.run(
        [sys.executable, "deploy/mcu_report.py", str(folder), "--mask", "m7.pgm",
         "--host-mask", "host.pgm"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bit-identical" in result.stdout and "flash:" in result.stdout
    assert json.loads((folder / "report.json").read_text())["target"] == "stm32h743"
