"""Per-op parity of the generated C++ (float32) against onnxruntime on random inputs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from d2seg.errors import ConfigError
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.harness import load_model

pytestmark = pytest.mark.needs_tools("g++")

RNG = np.random.default_rng(0)


def _model(nodes, in_shape, out_shape, initializers=(), out_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes, "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", out_type, out_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _weights(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _check(tmp_path, model, in_shape, atol=2e-5):
    path = tmp_path / "op.onnx"
    onnx.save(model, str(path))
    lower_onnx_to_cpp(path, tmp_path / "out", name="op")
    compiled = load_model(tmp_path / "out", flags=("-O1",))
    x = (RNG.random(in_shape) * 4 - 2).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0].astype(np.float32)
    np.testing.assert_allclose(compiled(x), expected, rtol=0, atol=atol)


CONV_CASES = {
    "3x3_pad1_bias": dict(c=5, m=6, k=3, attrs=dict(pads=[1, 1, 1, 1]), bias=True),
    "7x7_stride2_pad3": dict(c=3, m=8, k=7, attrs=dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    "3x3_dilation2": dict(c=4, m=5, k=3, attrs=dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    "groups2": dict(c=4, m=6, k=3, attrs=dict(group=2, pads=[1, 1, 1, 1]), bias=True),
    "depthwise": dict(c=4, m=4, k=3, attrs=dict(group=4, pads=[1, 1, 1, 1])),
    "1x1": dict(c=7, m=9, k=1, attrs={}, bias=True),
    "1x1_stride2": dict(c=4, m=3, k=1, attrs=dict(strides=[2, 2])),
    "asymmetric_pad": dict(c=3, m=4, k=3, attrs=dict(pads=[0, 1, 1, 0], strides=[2, 2])),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_matches_onnxruntime(tmp_path, case):
    spec = CONV_CASES[case]
    c, m, k = spec["c"], spec["m"], spec["k"]
    groups = spec["attrs"].get("group", 1)
    # Unit-variance outputs, so atol is about float32 rounding of the sum, not its magnitude.
    inits = [("w", _weights(m, c // groups, k, k) / np.float32(np.sqrt(c // groups * k * k)))]
    inputs = ["x", "w"]
    if spec.get("bias"):
        inits.append(("b", _weights(m)))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], **spec["attrs"])
    _check(tmp_path, _model([node], [1, c, 19, 21], None, inits), (1, c, 19, 21))


def test_conv_relu_and_residual_fusion(tmp_path):
    """Conv → BatchNorm → Add(x) → Relu (a ResNet block end) becomes one fused Conv."""
    c = 6
    inits = [("w", _weights(c, c, 3, 3)), ("g", _weights(c) + 2), ("beta", _weights(c)),
             ("mean", _weights(c)), ("var", np.abs(_weights(c)) + 0.5)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"]),
        helper.make_node("Add", ["n", "x"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    _check(tmp_path, _model(nodes, [1, c, 12, 10], None, inits), (1, c, 12, 10))


def test_constant_subgraphs_are_folded(tmp_path):
    """A weight computed from constants (Mul, then Identity) is evaluated at generation time."""
    inits = [("w", _weights(4, 3, 3, 3) / np.float32(5)), ("two", np.float32(2))]
    nodes = [
        helper.make_node("Mul", ["w", "two"], ["w2"]),
        helper.make_node("Identity", ["w2"], ["w3"]),
        helper.make_node("Conv", ["x", "w3"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["c"], ["y"]),
    ]
    _check(tmp_path, _model(nodes, [1, 3, 8, 8], None, inits), (1, 3, 8, 8))


@pytest.mark.parametrize("mode", ["half_pixel", "pytorch_half_pixel", "align_corners"])
def test_bilinear_resize_matches_onnxruntime(tmp_path, mode):
    inits = [("scales", np.array([1, 1, 2, 2], np.float32))]
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode=mode)
    _check(tmp_path, _model([node], [1, 3, 7, 9], None, inits), (1, 3, 7, 9))


def test_nearest_resize_matches_onnxruntime(tmp_path):
    """torch's F.interpolate(mode="nearest") export: asymmetric + floor."""
    inits = [("scales", np.array([1, 1, 2, 3], np.float32))]
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                            coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    _check(tmp_path, _model([node], [1, 2, 5, 4], None, inits), (1, 2, 5, 4))


def test_elementwise_and_pooling_ops_match_onnxruntime(tmp_path):
    """Normalisation (Sub/Div by per-channel constants), MaxPool, Relu, Add, Concat, Sigmoid,
    Softmax in one graph."""
    mean = np.array([1.0, -0.5, 0.25], np.float32).reshape(1, 3, 1, 1)
    std = np.array([2.0, 0.5, 1.5], np.float32).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["s"]),
        helper.make_node("Div", ["s", "std"], ["d"]),
        helper.make_node("MaxPool", ["d"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["p"], ["r"]),
        helper.make_node("Sigmoid", ["p"], ["g"]),
        helper.make_node("Add", ["r", "g"], ["a"]),
        helper.make_node("Concat", ["a", "p"], ["c"], axis=1),
        helper.make_node("Softmax", ["c"], ["y"], axis=1),
    ]
    inits = [("mean", mean), ("std", std)]
    _check(tmp_path, _model(nodes, [1, 3, 11, 13], None, inits), (1, 3, 11, 13))


INT64_MAX = np.iinfo(np.int64).max
PAD_CASES = {
    # F.pad(x, (0, right, 0, bottom)) as torch.onnx exports it: pads for all four axes.
    "bottom_right": ([0, 0, 0, 0, 0, 0, 3, 5], None),
    "all_sides": ([0, 0, 2, 1, 0, 0, 3, 4], None),
    "explicit_zero_value": ([0, 0, 1, 0, 0, 0, 0, 2], np.float32(0)),
}


@pytest.mark.parametrize("case", sorted(PAD_CASES))
def test_constant_pad_matches_onnxruntime(tmp_path, case):
    pads, value = PAD_CASES[case]
    inits = [("pads", np.array(pads, np.int64))]
    inputs = ["x", "pads"]
    if value is not None:
        inits.append(("value", value))
        inputs.append("value")
    node = helper.make_node("Pad", inputs, ["y"], mode="constant")
    _check(tmp_path, _model([node], [1, 3, 7, 9], None, inits), (1, 3, 7, 9))


SLICE_CASES = {
    # logits[:, :, :h, :w] as torch.onnx exports it: one Slice per axis.
    "crop_bottom_right": ([0, 0], [5, 6], [2, 3], None),
    "window": ([2, 1], [6, 8], [2, 3], [1, 1]),
    "negative_and_clamped": ([-5, 3], [INT64_MAX, -1], [-2, -1], None),
    "all_axes": ([0, 0, 1, 2], [1, 3, 9, 9], None, None),
}


@pytest.mark.parametrize("case", sorted(SLICE_CASES))
def test_slice_matches_onnxruntime(tmp_path, case):
    starts, ends, axes, steps = SLICE_CASES[case]
    inits = [("starts", np.array(starts, np.int64)), ("ends", np.array(ends, np.int64))]
    for name, values in (("axes", axes), ("steps", steps)):
        if values is not None:
            inits.append((name, np.array(values, np.int64)))
    inputs = ["x", "starts", "ends", "axes" if axes is not None else "",
              "steps" if steps is not None else ""]
    node = helper.make_node("Slice", inputs, ["y"])
    _check(tmp_path, _model([node], [1, 3, 7, 9], None, inits), (1, 3, 7, 9))


def test_pad_then_conv_then_crop_matches_onnxruntime(tmp_path):
    """The U-Net's size-divisibility pattern: pad to a multiple, convolve, crop back."""
    inits = [("pads", np.array([0, 0, 0, 0, 0, 0, 1, 3], np.int64)),
             ("w", _weights(4, 2, 3, 3) / np.float32(4)),
             ("starts", np.array([0, 0], np.int64)), ("ends", np.array([7, 9], np.int64)),
             ("axes", np.array([2, 3], np.int64))]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["y"]),
    ]
    _check(tmp_path, _model(nodes, [1, 2, 7, 9], None, inits), (1, 2, 7, 9))


REFUSED_WINDOWS = {
    "reflect_pad": (helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect", name="n"),
                    [("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))],
                    "only constant zero padding"),
    "nonzero_pad_value": (helper.make_node("Pad", ["x", "pads", "v"], ["y"], name="n"),
                          [("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
                           ("v", np.float32(1))], "only constant zero padding"),
    "channel_pad": (helper.make_node("Pad", ["x", "pads"], ["y"], name="n"),
                    [("pads", np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64))],
                    "padding of the H and W axes"),
    "channel_slice": (helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="n"),
                      [("s", np.array([1], np.int64)), ("e", np.array([2], np.int64)),
                       ("a", np.array([1], np.int64))], "slicing of the H and W axes"),
    "strided_slice": (helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"], name="n"),
                      [("s", np.array([0], np.int64)), ("e", np.array([4], np.int64)),
                       ("a", np.array([2], np.int64)), ("st", np.array([2], np.int64))],
                      "steps other than 1"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_WINDOWS))
def test_unsupported_pad_and_slice_are_refused_with_the_reason(tmp_path, case):
    node, inits, reason = REFUSED_WINDOWS[case]
    path = tmp_path / "op.onnx"
    onnx.save(_model([node], [1, 3, 4, 4], None, inits), str(path))
    with pytest.raises(ConfigError, match=f"{node.op_type} node 'n': .*{reason}"):
        lower_onnx_to_cpp(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_conv_transpose_and_argmax_match_onnxruntime(tmp_path):
    inits = [("w", _weights(3, 4, 2, 2)), ("b", _weights(4))]
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2]),
        helper.make_node("ArgMax", ["t"], ["y"], axis=1, keepdims=1),
    ]
    model = _model(nodes, [1, 3, 6, 5], None, inits, out_type=TensorProto.INT64)
    path = tmp_path / "op.onnx"
    onnx.save(model, str(path))
    lower_onnx_to_cpp(path, tmp_path / "out", name="op")
    x = RNG.standard_normal((1, 3, 6, 5)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    assert np.array_equal(load_model(tmp_path / "out", flags=("-O1",))(x), expected)


def test_unsupported_op_is_named(tmp_path):
    path = tmp_path / "tanh.onnx"
    onnx.save(_model([helper.make_node("Tanh", ["x"], ["y"], name="head/tanh")], [1, 1, 4, 4],
                     [1, 1, 4, 4]), str(path))
    with pytest.raises(ConfigError, match="unsupported op Tanh .node head/tanh"):
        lower_onnx_to_cpp(path, tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "deploy/lower_to_cpp.py", str(path), "--output", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Tanh" in result.stderr
    assert not (tmp_path / "o").exists()


def test_non_constant_resize_scale_is_rejected(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", name="up")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "resize.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    with pytest.raises(ConfigError, match="non-constant Resize scale .node up"):
        lower_onnx_to_cpp(path, tmp_path / "out")


DEPTHWISE_CASES = {
    "3x3_stride1": dict(k=3, attrs=dict(pads=[1, 1, 1, 1]), bias=True),
    "3x3_stride2": dict(k=3, attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "5x5_stride2": dict(k=5, attrs=dict(strides=[2, 2], pads=[2, 2, 2, 2]), bias=True),
    "3x3_dilation2": dict(k=3, attrs=dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
}


@pytest.mark.parametrize("case", sorted(DEPTHWISE_CASES))
def test_depthwise_conv_uses_the_direct_kernel_and_matches_onnxruntime(tmp_path, case):
    spec, c = DEPTHWISE_CASES[case], 6
    inits = [("w", _weights(c, 1, spec["k"], spec["k"]) / np.float32(spec["k"]))]
    inputs = ["x", "w"]
    if spec.get("bias"):
        inits.append(("b", _weights(c)))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], group=c, **spec["attrs"])
    _check(tmp_path, _model([node], [1, c, 17, 19], None, inits), (1, c, 17, 19))
    assert "depthwise_conv2d_f32(" in (tmp_path / "out" / "op.cpp").read_text()


def test_mobilenet_activations_and_squeeze_excite_match_onnxruntime(tmp_path):
    """Conv+ReLU6 (Clip, fused), x·HardSigmoid(x) (torch's Hardswish, fused), SiLU, an unfused
    Clip and HardSigmoid, and a squeeze-excite gate: GlobalAveragePool → Conv → HardSigmoid →
    Mul by the N×C×1×1 gate."""
    c = 4
    inits = [("w", _weights(c, c, 3, 3) / np.float32(3)), ("lo", np.float32(0)),
             ("hi", np.float32(6)), ("w_se", _weights(c, c, 1, 1)), ("lo2", np.float32(-1)),
             ("hi2", np.float32(0.5))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r6"]),
        helper.make_node("HardSigmoid", ["r6"], ["hs"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["r6", "hs"], ["swish"]),
        helper.make_node("Sigmoid", ["swish"], ["sg"]),
        helper.make_node("Mul", ["sg", "swish"], ["silu"]),
        helper.make_node("GlobalAveragePool", ["silu"], ["pool"]),
        helper.make_node("Conv", ["pool", "w_se"], ["se"]),
        helper.make_node("HardSigmoid", ["se"], ["gate"], alpha=0.25, beta=0.4),
        helper.make_node("Mul", ["gate", "silu"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "lo2", "hi2"], ["y"]),
    ]
    _check(tmp_path, _model(nodes, [1, c, 9, 11], None, inits), (1, c, 9, 11))
    source = (tmp_path / "out" / "op.cpp").read_text()
    for kernel in ("hard_swish_f32(", "silu_f32(", "mul_channel_f32(", "clip_f32("):
        assert kernel in source
    assert " sigmoid_f32(" not in source  # x·Sigmoid(x) became one SiLU


def test_hardswish_op_and_ceil_mode_max_pool_match_onnxruntime(tmp_path):
    nodes = [
        helper.make_node("HardSwish", ["x"], ["h"]),
        helper.make_node("MaxPool", ["h"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                         ceil_mode=1),
    ]
    _check(tmp_path, _model(nodes, [1, 3, 12, 14], None), (1, 3, 12, 14))


def test_activation_broadcast_other_than_a_channel_gate_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "g"], ["y"], name="gate")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
         helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "mul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    with pytest.raises(ConfigError, match="Mul node 'gate': broadcast between activations"):
        lower_onnx_to_cpp(path, tmp_path / "out")


def test_fp16_graph_is_refused_in_one_line_naming_model_onnx(tmp_path):
    """What deploy/export_onnx.py --fp16 writes: float16 weights between Cast nodes."""
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Mul", ["h", "k"], ["m"]),
             helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT)]
    model = _model(nodes, [1, 1, 4, 4], [1, 1, 4, 4], [("k", np.float16(2))])
    path = tmp_path / "model_fp16.onnx"
    onnx.save(model, str(path))
    result = subprocess.run(
        [sys.executable, "deploy/lower_to_cpp.py", str(path), "--output", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "fp16 graph" in result.stderr and "model.onnx" in result.stderr
    assert not (tmp_path / "o").exists()
