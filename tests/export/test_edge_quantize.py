"""int8 calibration (--calib-method minmax|percentile|mse) and the int8 mask output stage of
one-logit models (--mask-output): the mask equals the float threshold of the dequantised
logit, and no float runs after the int8 graph."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.errors import ConfigError
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.harness import load_model
from d2seg.export.edge.ir import load_onnx
from d2seg.export.edge.quantize import (CALIB_METHODS, activation_params, calibrate,
                                        load_calibration_images)
from d2seg.export.onnx import export_semantic_onnx
from d2seg.modeling import build_model


def _identity_relu_onnx(path) -> str:
    """x (1×1×32×32) → Relu: the calibration ranges of x are those of the images fed."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return str(path)


def _int8_error(values: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of ``values`` quantised to the int8 grid covering [low, high]."""
    scale, zero = activation_params(low, high)
    q = np.clip(np.round(values / scale) + zero, -128, 127)
    return float(((values - scale * (q - zero)) ** 2).mean())


def test_percentile_clips_the_tails_and_mse_has_the_least_int8_error(tmp_path):
    path = _identity_relu_onnx(tmp_path / "relu.onnx")
    graph = load_onnx(path)
    rng = np.random.default_rng(0)
    # Heavy-tailed values (Student t, 2 degrees of freedom), like a conv's pre-activation.
    images = [rng.standard_t(2, (1, 1, 32, 32)).astype(np.float32) for _ in range(32)]
    values = np.concatenate([i.ravel() for i in images]).astype(np.float64)
    ranges = {m: calibrate(path, graph, images, method=m)["x"] for m in CALIB_METHODS}
    assert ranges["minmax"] == (pytest.approx(values.min()), pytest.approx(values.max()))
    low, high = ranges["percentile"]
    kept = ((values >= low) & (values <= high)).mean()
    assert 0.9995 <= kept < 1.0
    low, high = ranges["mse"]
    assert values.min() <= low < 0 < high <= values.max()
    assert high - low < values.max() - values.min()
    errors = {m: _int8_error(values, *r) for m, r in ranges.items()}
    assert errors["mse"] < errors["minmax"] and errors["mse"] < errors["percentile"]


def test_unknown_calibration_method_names_the_choices(tmp_path):
    path = _identity_relu_onnx(tmp_path / "relu.onnx")
    with pytest.raises(ConfigError, match="--calib-method 'kl'.*minmax, percentile, mse"):
        calibrate(path, load_onnx(path), [np.zeros((1, 1, 32, 32), np.float32)], method="kl")


@pytest.fixture(scope="module")
def binary_onnx(tmp_path_factory):
    """The tiny MobileNetV3 grayscale one-logit U-Net at 64×64 (random init, eval) and a folder
    of gray calibration cars."""
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_MNV3_small_gray_tiny.yaml")
    root = tmp_path_factory.mktemp("binary")
    path = export_semantic_onnx(build_model(cfg).eval(), height=64, width=64,
                                path=root / "model.onnx")
    calib = root / "calib"
    calib.mkdir()
    for index in range(3):
        Image.fromarray(_gray(index)).save(calib / f"{index}.png")
    return path, calib


def _gray(index: int) -> np.ndarray:
    rgb = render_sample("carvana", seed=2, size=(64, 64), index=index)["image"]
    return rgb.mean(axis=2).round().astype(np.uint8)


@pytest.mark.slow
def test_mask_output_equals_the_threshold_of_the_dequantised_logit(binary_onnx, tmp_path):
    path, calib = binary_onnx
    lower_onnx_to_cpp(path, tmp_path / "logit", name="car_logit", int8=True, calib_dir=calib,
                      calib_method="mse")
    report = lower_onnx_to_cpp(path, tmp_path / "mask", name="car_mask", int8=True,
                               calib_dir=calib, calib_method="mse", mask_output=True)
    assert report["calib_method"] == "mse"
    source = (tmp_path / "mask" / "car_mask.cpp").read_text()
    assert "binary_mask_s8(" in source and "dequantize_f32(" not in source
    assert "#define CAR_MASK_OUTPUT_IS_INDEX 1" in (tmp_path / "mask" / "car_mask.h").read_text()
    logit_model = load_model(tmp_path / "logit", flags=("-O1",))
    mask_model = load_model(tmp_path / "mask", flags=("-O1",))
    foreground = []
    for index in range(10, 14):
        x = _gray(index)[None, None].astype(np.float32)
        mask, logit = mask_model(x), logit_model(x)
        assert set(np.unique(mask)) <= {0.0, 1.0}
        np.testing.assert_array_equal(mask, (logit > 0).astype(np.float32))
        foreground.append(mask.mean())
    assert 0 < np.mean(foreground) < 1  # both classes occur, so the comparison means something


def test_mask_output_refuses_a_float_model(binary_onnx, tmp_path):
    path, _ = binary_onnx
    with pytest.raises(ConfigError, match="--mask-output needs a one-logit binary model whose "
                                          "logits are int8.*fix: lower with --int8"):
        lower_onnx_to_cpp(path, tmp_path / "out", mask_output=True)
    assert not (tmp_path / "out").exists()


def test_calibration_images_are_letterboxed_like_the_deployed_input(tmp_path):
    # With a pad value the calibration sees what deploy/to_pnm.py --keep-aspect feeds the
    # model (here a 20×40 white image in a 16×16 input: 8 rows of image, 8 of pad).
    Image.fromarray(np.full((20, 40), 255, np.uint8)).save(tmp_path / "wide.png")
    stretched, = load_calibration_images(tmp_path, (1, 1, 16, 16))
    letterboxed, = load_calibration_images(tmp_path, (1, 1, 16, 16), pad_value=117)
    assert stretched.shape == letterboxed.shape == (1, 1, 16, 16)
    assert (stretched == 255).all()
    assert (letterboxed[0, 0, :8] == 255).all() and (letterboxed[0, 0, 8:] == 117).all()
