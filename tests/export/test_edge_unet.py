"""The tiny ResNet-18 U-Net lowered to C++: float parity with onnxruntime, int8 agreement,
arena bounds, a warning-free build and the generated PGM/PPM program."""

import subprocess
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.harness import build_program, load_model
from d2seg.export.onnx import export_semantic_onnx
from d2seg.modeling import build_model

pytestmark = [pytest.mark.needs_tools("g++"),
              pytest.mark.slow]

SIZE = 64


def _car_sample(index: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 3×H×W RGB image, long H×W labels: 1 = car, 0 = background)."""
    sample = render_sample("carvana", seed=1, size=(SIZE, SIZE), index=index)
    labels = sample["masks"].any(axis=0).astype(np.int64)
    return sample["image"].transpose(2, 0, 1).copy(), labels


def _fit_predictor(model, samples) -> None:
    """Set the 1×1 logit conv by least squares on the decoder features (target +1 for the
    true class, -1 otherwise): a hand-set model whose argmax follows the cars."""
    features = []
    hook = model.sem_seg_head.predictor.register_forward_pre_hook(
        lambda module, inputs: features.append(inputs[0][0].flatten(1).T))
    with torch.no_grad():
        for image, _ in samples:
            model([{"image": torch.from_numpy(image)}])
    hook.remove()
    x = torch.cat(features).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    labels = torch.from_numpy(np.concatenate([lab.ravel() for _, lab in samples]))
    target = -torch.ones(len(x), model.sem_seg_head.num_classes, dtype=x.dtype)
    target[torch.arange(len(x)), labels] = 1
    solution = torch.linalg.lstsq(x, target).solution.T.float()
    with torch.no_grad():
        model.sem_seg_head.predictor.weight.copy_(solution[:, :-1, None, None])
        model.sem_seg_head.predictor.bias.copy_(solution[:, -1])


@pytest.fixture(scope="module")
def unet_onnx(tmp_path_factory):
    """The tiny U-Net (R-18, 3 classes), random init with BatchNorm statistics measured on
    synthetic car images and a least-squares logit layer. Plain random init is not usable for
    the int8 check: its logits are near-ties, so argmax flips on any rounding."""
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_R_18_tiny.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    samples = [_car_sample(i) for i in range(8)]
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running stats = the average over the samples
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for image, _ in samples:
            x = model.preprocessor([{"image": torch.from_numpy(image)}]).tensors
            model.sem_seg_head.layers(model.backbone(x))
    model.eval()
    _fit_predictor(model, samples)
    root = tmp_path_factory.mktemp("unet")
    path = export_semantic_onnx(model, height=SIZE, width=SIZE, path=root / "model.onnx")
    calib = root / "calib"
    calib.mkdir()
    for i in range(8, 12):
        image, _ = _car_sample(i)
        cv2.imwrite(str(calib / f"{i}.png"), cv2.cvtColor(image.transpose(1, 2, 0),
                                                          cv2.COLOR_RGB2BGR))
    return path, calib


def _test_images() -> list[np.ndarray]:
    return [_car_sample(i)[0][None].astype(np.float32) for i in range(20, 24)]


def _onnxruntime(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_float_unet_matches_onnxruntime(unet_onnx, tmp_path):
    path, _ = unet_onnx
    report = lower_onnx_to_cpp(path, tmp_path / "fp32", name="unet")
    model = load_model(tmp_path / "fp32", flags=("-O1",))
    for x in _test_images():
        assert np.abs(model(x) - _onnxruntime(path, x)).max() <= 1e-4
    assert report["liveness_lower_bound_bytes"] <= report["arena_bytes"] < report["naive_bytes"]
    assert report["macs"] > 0 and report["weights_bytes"] > 4 * 11_000_000


def _cpu_has(flag: str) -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and flag in cpuinfo.read_text().split()


def test_int8_unet_agrees_with_float_and_prog_writes_mask(unet_onnx, tmp_path):
    path, calib = unet_onnx
    report = lower_onnx_to_cpp(path, tmp_path / "int8", name="unet_q", int8=True,
                               calib_dir=calib)
    assert report["liveness_lower_bound_bytes"] <= report["arena_bytes"] < report["naive_bytes"]
    model = load_model(tmp_path / "int8", flags=("-O1",))
    # -march=native takes the machine's SIMD int8 kernels (AVX-512 VNNI where present): integer
    # arithmetic, so the output is identical to the portable build's.
    native = load_model(tmp_path / "int8", flags=("-O1", "-march=native"))
    # -march=haswell: the AVX2 vpmaddwd kernel (no AVX-512), where this CPU can run it.
    simd = [native] + ([load_model(tmp_path / "int8", flags=("-O1", "-march=haswell"))]
                       if _cpu_has("avx2") else [])
    agree = []
    for x in _test_images():
        expected = _onnxruntime(path, x).argmax(1)
        assert 0 < (expected == 1).mean() < 1  # the fitted model finds cars
        output = model(x)
        for build in simd:
            np.testing.assert_array_equal(build(x), output)
        agree.append((output.argmax(1) == expected).mean())
    assert np.mean(agree) >= 0.99

    # The folder's program, built the documented way (warnings are errors).
    prog = build_program(tmp_path / "int8", tmp_path / "prog", flags=("-O1",))
    image = _test_images()[0][0].astype(np.uint8)
    ppm = tmp_path / "in.ppm"
    ppm.write_bytes(f"P6\n{SIZE} {SIZE}\n255\n".encode() + image.transpose(1, 2, 0).tobytes())
    subprocess.run([str(prog), str(ppm), str(tmp_path / "mask.pgm")], check=True)
    data = (tmp_path / "mask.pgm").read_bytes()
    header = f"P5\n{SIZE} {SIZE}\n255\n".encode()
    assert data.startswith(header)
    mask = np.frombuffer(data[len(header):], np.uint8).reshape(SIZE, SIZE)
    # Three classes: gray levels 0, 127, 254 (class k at k * (255 // 2)), visible in a viewer.
    np.testing.assert_array_equal(mask, model(image[None].astype(np.float32)).argmax(1)[0] * 127)
    # The weights are a linked binary file, not a source literal.
    assert (tmp_path / "int8" / "unet_q_weights.bin").stat().st_size == report["weights_bytes"]
    assert (tmp_path / "int8" / "unet_q.cpp").stat().st_size < 200_000

    small = tmp_path / "small.pgm"
    small.write_bytes(b"P5\n8 8\n255\n" + bytes(64))
    result = subprocess.run([str(prog), str(small), str(tmp_path / "o.pgm")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "8x8" in result.stderr
    assert not (tmp_path / "o.pgm").exists()


def test_unet_at_a_size_not_divisible_by_32_lowers_and_matches_onnxruntime(tmp_path):
    """72×100: the graph pads to 96×128 and crops the logits back (Pad and Slice kernels)."""
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_R_18_gray_binary_tiny.yaml")
    cfg.MODEL.DEVICE = "cpu"
    path = export_semantic_onnx(build_model(cfg).eval(), height=72, width=100,
                                path=tmp_path / "model.onnx")
    report = lower_onnx_to_cpp(path, tmp_path / "fp32", name="unet_gray")
    assert report["input_shape"] == [1, 1, 72, 100] and report["output_shape"] == [1, 1, 72, 100]
    model = load_model(tmp_path / "fp32", flags=("-O1",))
    for index in range(2):
        rgb = render_sample("carvana", seed=2, size=(72, 100), index=index)["image"]
        x = rgb.mean(axis=2).round()[None, None].astype(np.float32)
        assert np.abs(model(x) - _onnxruntime(path, x)).max() <= 1e-4
    # int8: Pad fills with the zero point and Slice copies int8 values (no float in between).
    calib = tmp_path / "calib"
    calib.mkdir()
    for index in range(2):
        Image.fromarray(render_sample("carvana", seed=3, size=(72, 100), index=index)["image"]
                        ).save(calib / f"{index}.png")
    lower_onnx_to_cpp(path, tmp_path / "int8", name="unet_gray_q", int8=True, calib_dir=calib)
    source = (tmp_path / "int8" / "unet_gray_q.cpp").read_text()
    assert "copy_window<int8_t>" in source and "copy_window<float>" not in source
    quantized = load_model(tmp_path / "int8", flags=("-O1",))
    out_q, out_f = quantized(x), model(x)
    assert out_q.shape == out_f.shape == (1, 1, 72, 100)
    assert np.corrcoef(out_q.ravel(), out_f.ravel())[0, 1] > 0.98
    # The folder's Makefile builds prog; a one-logit binary mask is written 0/255.
    subprocess.run(["make", "-s", "-C", str(tmp_path / "int8"), "CXXFLAGS=-O1"], check=True)
    pgm = tmp_path / "in.pgm"
    pgm.write_bytes(b"P5\n100 72\n255\n" + x.astype(np.uint8).tobytes())
    subprocess.run([str(tmp_path / "int8" / "prog"), str(pgm), str(tmp_path / "mask.pgm")],
                   check=True)
    header = b"P5\n100 72\n255\n"
    mask = np.frombuffer((tmp_path / "mask.pgm").read_bytes()[len(header):], np.uint8)
    np.testing.assert_array_equal(mask, np.where(out_q.ravel() > 0, 255, 0))
