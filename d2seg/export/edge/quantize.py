"""Post-training int8 quantisation of the IR (TensorFlow Lite's int8 scheme).

Activations: per-tensor asymmetric int8, (scale, zero point) from the range each tensor
reaches on calibration images (run with onnxruntime on the original graph, every IR tensor
added as an output): its min/max, or (:data:`CALIB_METHODS`) the 0.01/99.99 percentiles of
its values, or the clipping range that minimises the int8 rounding + clipping squared error
over its value histogram. Weights: per-output-channel symmetric int8; biases int32 at scale
``input_scale * weight_scale``. Nodes with an int8 kernel (Conv incl. depthwise, Add, Mul,
Concat, MaxPool, Resize, Relu, GlobalAveragePool, and the elementwise ops of
:data:`ELEMENTWISE_OPS` as 256-entry lookup tables) run on int8; the others stay float, with
QuantizeLinear / DequantizeLinear inserted where the precision changes (in a U-Net: after the input normalisation and before the logits).
"""

import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from d2seg.errors import ConfigError
from d2seg.export.edge.ir import Graph, Node
from d2seg.export.samples import letterbox_image, resize_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff")
# int8 kernels whose output keeps the input's (scale, zero point).
SCALE_KEEPING_OPS = ("MaxPool", "Resize", "Relu", "Pad", "Slice")
# Elementwise ops an int8 lookup table computes (d2seg.export.edge.emit.ELEMENTWISE).
ELEMENTWISE_OPS = ("Sigmoid", "SiLU", "HardSwish", "HardSigmoid", "Clip")


def load_calibration_images(folder: str | Path, shape: tuple[int, ...],
                            pad_value: float | None = None) -> list[np.ndarray]:
    """Images of ``folder`` and its subfolders (what tools/convert_labelme.py writes) as float32
    1×C×H×W pixels 0-255 (RGB for C=3, gray for C=1), brought to the model's H×W as the
    deployed images will be: stretched, or with ``pad_value`` letterboxed (aspect kept, the
    rest ``pad_value``: :func:`d2seg.export.samples.letterbox_image`)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file()) if folder.is_dir() else []
    if not files:
        raise ConfigError(f"--calib {folder}: no images found in it or its subfolders; fix: "
                          f"pass a folder of {'/'.join(IMAGE_SUFFIXES)} images like the ones "
                          f"the model will see")
    _, channels, height, width = shape
    images = []
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
        if image is None:
            raise ConfigError(f"{path}: cannot be read as an image; fix: remove or replace it")
        if channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif channels != 1:
            raise ConfigError(f"--calib: the model takes {channels}-channel inputs; fix: "
                              f"calibrate a 1- or 3-channel model")
        image = image.reshape(*image.shape[:2], channels)
        image = (resize_image(image, height, width) if pad_value is None
                 else letterbox_image(image, height, width, pad_value))
        images.append(image.transpose(2, 0, 1)[None].astype(np.float32))
    return images


CALIB_METHODS = ("minmax", "percentile", "mse")
HISTOGRAM_BINS = 2048
PERCENTILE = 99.99  # "percentile": the range keeps this share of values (the rest is clipped)
# "mse": candidate clipping bounds, as fractions of the observed min and max.
MSE_FRACTIONS = np.geomspace(1 / 64, 1.0, 48)


def _activation_session(onnx_path: str | Path, graph: Graph):
    """An onnxruntime session of the original graph with every IR tensor as an output."""
    model = onnx.load(str(onnx_path))
    existing = {o.name for o in model.graph.output}
    for name in graph.shapes:
        if name not in graph.inputs and name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _activations(session, graph: Graph, images: list[np.ndarray]):
    """Per image, {name: value} of the input and every IR tensor."""
    outputs = [o.name for o in session.get_outputs()]
    for image in images:
        values = dict(zip(outputs, session.run(outputs, {graph.inputs[0]: image})))
        values[graph.inputs[0]] = image
        yield values


def _percentile_range(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    cumulative = np.cumsum(counts) / counts.sum()
    tail = 1.0 - PERCENTILE / 100.0
    low = int(np.searchsorted(cumulative, tail, side="right"))
    high = int(np.searchsorted(cumulative, 1.0 - tail, side="left"))
    return float(edges[low]), float(edges[high + 1])


def _mse_range(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """The (low, high) among :data:`MSE_FRACTIONS` of the observed range whose int8 grid
    (:func:`activation_params`) has the least squared error over the histogram's bin centres."""
    centres = (edges[:-1] + edges[1:]) / 2
    low, high = min(edges[0], 0.0), max(edges[-1], 0.0)
    lows = np.unique(low * MSE_FRACTIONS) if low < 0 else np.zeros(1)
    highs = np.unique(high * MSE_FRACTIONS) if high > 0 else np.zeros(1)
    best, best_error = (low, high), np.inf
    for candidate_low in lows:
        scale = np.maximum((highs - candidate_low) / 255.0, 1e-12)[:, None]
        zero = np.clip(np.round(-128 - candidate_low / scale), -128, 127)
        q = np.clip(np.round(centres / scale) + zero, -128, 127)
        error = (((centres - scale * (q - zero)) ** 2) * counts).sum(axis=1)
        k = int(error.argmin())
        if error[k] < best_error:
            best, best_error = (float(candidate_low), float(highs[k])), error[k]
    return best


def calibrate(onnx_path: str | Path, graph: Graph, images: list[np.ndarray], *,
              method: str = "minmax") -> dict:
    """The int8 range of every IR activation over ``images`` → {name: (low, high)}.

    ``method`` (:data:`CALIB_METHODS`): "minmax" the extremes; "percentile" and "mse" choose
    within them from a :data:`HISTOGRAM_BINS`-bin histogram (a second pass over ``images``).
    """
    if method not in CALIB_METHODS:
        raise ConfigError(f"--calib-method {method!r} is not one of {', '.join(CALIB_METHODS)}; "
                          f"fix: pick one of them (minmax is the default)")
    session = _activation_session(onnx_path, graph)
    ranges: dict[str, tuple[float, float]] = {}
    for values in _activations(session, graph, images):
        for name, value in values.items():
            low, high = float(value.min()), float(value.max())
            old = ranges.get(name, (low, high))
            ranges[name] = (min(low, old[0]), max(high, old[1]))
    if method == "minmax":
        return ranges
    # A (near-)constant tensor has no distribution to choose from: it keeps its min/max.
    spread = {name: high - low > 1e-6 * max(abs(low), abs(high))
              for name, (low, high) in ranges.items()}
    counts = {name: np.zeros(HISTOGRAM_BINS, np.float64) for name in ranges if spread[name]}
    for values in _activations(session, graph, images):
        for name in counts:
            counts[name] += np.histogram(values[name].astype(np.float64), HISTOGRAM_BINS,
                                         range=ranges[name])[0]
    choose = _percentile_range if method == "percentile" else _mse_range
    return {name: choose(counts[name], np.linspace(*ranges[name], HISTOGRAM_BINS + 1))
            if name in counts else ranges[name] for name in ranges}


def activation_params(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor covering [low, high] and 0."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1e-8
    zero = int(np.clip(round(-128 - low / scale), -128, 127))
    return scale, zero


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real`` as a Q31 multiplier and a power-of-two shift: real ≈ m · 2^(shift − 31)."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:
        multiplier //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return multiplier, shift


def quantize_weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8: (int8 weights, float64 scale per channel)."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    scale = np.abs(flat).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(weight.shape), scale


def _int8_capable(graph: Graph, node: Node) -> bool:
    if node.op in SCALE_KEEPING_OPS:
        return True
    if node.op == "Conv":
        return not node.attrs.get("residual")
    if node.op in ("Add", "Mul"):
        return all(i not in graph.constants for i in node.inputs)
    if node.op in ELEMENTWISE_OPS or node.op == "GlobalAveragePool":
        return True
    if node.op == "Concat":
        return all(d == 1 for d in graph.shapes[node.outputs[0]][: node.attrs["axis"]])
    return False


def quantize_graph(graph: Graph, ranges: dict) -> Graph:
    """Mark int8 nodes, give every int8 tensor its (scale, zero), insert Quantize/Dequantize.

    Tensors that keep the input's scale (outputs of :data:`SCALE_KEEPING_OPS`) take the input's
    parameters rather than their own calibration range, which is what their int8 kernels need.
    """
    nodes: list[Node] = []
    converted: dict[tuple[str, str], str] = {}

    def convert(name: str, dtype: str) -> str:
        if graph.dtype(name) == dtype:
            return name
        key = (name, dtype)
        if key not in converted:
            new = f"{name}#{dtype}"
            op = "QuantizeLinear" if dtype == "int8" else "DequantizeLinear"
            if dtype == "int8" and name not in graph.quant:
                graph.quant[name] = activation_params(*ranges[name])
            graph.shapes[new] = graph.shapes[name]
            graph.dtypes[new] = dtype
            if dtype == "int8":
                graph.quant[new] = graph.quant[name]
            nodes.append(Node(op, f"{op}_{name}", [name], [new]))
            converted[key] = new
        return converted[key]

    for node in graph.nodes:
        int8 = _int8_capable(graph, node)
        node.inputs = [i if not i or i in graph.constants else
                       convert(i, "int8" if int8 else "float32") for i in node.inputs]
        nodes.append(node)
        if not int8:
            continue
        out = node.outputs[0]
        graph.dtypes[out] = "int8"
        if node.op in SCALE_KEEPING_OPS:
            graph.quant[out] = graph.quant[node.inputs[0]]
        else:
            graph.quant[out] = activation_params(*ranges[out])
    graph.nodes = nodes
    for k, name in enumerate(graph.outputs):
        if graph.dtype(name) == "int8":
            float_name = f"{name}#float32"
            graph.nodes.append(Node("DequantizeLinear", f"DequantizeLinear_{name}", [name],
                                    [float_name]))
            graph.shapes[float_name] = graph.shapes[name]
            graph.outputs[k] = float_name
    return graph


def binary_mask_output(graph: Graph, source_name: str) -> Graph:
    """End a quantised one-logit model in its int8 mask: the output Dequantize becomes a
    BinaryMask (class 1 where q > zero point, the sign of the dequantised logit), so no float
    runs after the int8 graph. The output then holds class indices 0/1."""
    producer = graph.producer(graph.outputs[0])
    channels = graph.shapes[graph.outputs[0]][1]
    if producer is None or producer.op != "DequantizeLinear" or channels != 1:
        raise ConfigError(f"{source_name}: --mask-output needs a one-logit binary model whose "
                          f"logits are int8 (this output has {channels} channel(s)"
                          f"{'' if producer and producer.op == 'DequantizeLinear' else ', float'}"
                          f"); fix: lower with --int8 a model with SEM_SEG_HEAD.NUM_CLASSES 1, "
                          f"or leave --mask-output out")
    producer.op = "BinaryMask"
    producer.name = f"BinaryMask_{producer.inputs[0]}"
    return graph
