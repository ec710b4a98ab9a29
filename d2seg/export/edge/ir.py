"""A small graph IR for the C++ lowering, read from a static ONNX graph.

The IR is a topologically ordered list of :class:`Node` over named tensors: activations (a
static shape, no data) and constants (numpy arrays). Batch size is 1 and every shape is known at
generation time, which is what lets the planner lay the whole run out in one arena.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from d2seg.errors import ConfigError

# ONNX ops the lowering reads. Anything else is rejected with the op and node named.
SUPPORTED_OPS = frozenset({
    "Add", "ArgMax", "BatchNormalization", "Clip", "Concat", "Constant", "Conv", "ConvTranspose",
    "Div", "GlobalAveragePool", "HardSigmoid", "HardSwish", "Identity", "MaxPool", "Mul", "Pad",
    "Relu", "Resize", "Sigmoid", "Slice", "Softmax", "Sub",
})


@dataclass
class Node:
    """One operation. ``attrs`` holds the ONNX attributes, normalised by :func:`load_onnx`."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """Nodes in execution order over activations (``shapes``) and ``constants``.

    ``shapes`` maps every activation (graph input, output and intermediate) to its shape;
    ``dtypes`` maps activations to "float32" or "int8" (int8 after quantisation) and
    ``quant`` an int8 activation to its (scale, zero point): real = scale * (q - zero).
    """

    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]]
    constants: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    dtypes: dict[str, str] = field(default_factory=dict)
    quant: dict[str, tuple[float, int]] = field(default_factory=dict)

    def dtype(self, name: str) -> str:
        return self.dtypes.get(name, "float32")

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def producer(self, name: str) -> Node | None:
        return next((n for n in self.nodes if name in n.outputs), None)


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    attrs = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    return attrs


def _static_shape(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    if not value.type.tensor_type.HasField("shape"):
        return None
    dims = value.type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def _refuse_float16(path: Path, onnx_graph: onnx.GraphProto) -> None:
    """An fp16 export (``model_fp16.onnx``: float16 weights between Cast nodes) is refused: the
    runtime computes in float32 or int8, so lowering it would only widen every weight again."""
    half = onnx.TensorProto.FLOAT16
    if any(t.data_type == half for t in onnx_graph.initializer) or any(
            n.op_type == "Cast" and any(a.name == "to" and a.i == half for a in n.attribute)
            for n in onnx_graph.node):
        raise ConfigError(
            f"{path}: is an fp16 graph (float16 weights and Cast nodes); the C++ runtime "
            f"computes in float32 or int8, so fp16 buys nothing there; fix: lower the float32 "
            f"model.onnx written next to it (add --int8 --calib DIR for a 4x smaller model)")


def load_onnx(path: str | Path) -> Graph:
    """Read a static ONNX graph (batch 1, every shape known) into the IR.

    Raises ConfigError naming the op and node for an unsupported op, and naming the tensor for
    a dynamic shape (export with static input sizes, e.g. ``export_semantic_onnx(...,
    dynamic=False)``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX model not found; fix: pass the path of a model.onnx")
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=False)
    except Exception as e:  # onnx raises DecodeError, ValidationError, ... for broken files
        raise ConfigError(f"{path}: not a readable ONNX model ({e}); fix: re-export it") from e
    onnx_graph = model.graph
    _refuse_float16(path, onnx_graph)
    for node in onnx_graph.node:
        if node.op_type not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
            raise ConfigError(
                f"{path}: unsupported op {node.op_type} (node {node.name or node.output[0]}); "
                f"fix: export a static graph using only {', '.join(sorted(SUPPORTED_OPS))}"
            )
    constants = {t.name: numpy_helper.to_array(t) for t in onnx_graph.initializer}
    shapes: dict[str, tuple[int, ...]] = {}
    for value in [*onnx_graph.input, *onnx_graph.value_info, *onnx_graph.output]:
        if value.name in constants:
            continue
        shape = _static_shape(value)
        if shape is not None:
            shapes[value.name] = shape
    inputs = [i.name for i in onnx_graph.input if i.name not in constants]
    outputs = [o.name for o in onnx_graph.output]
    nodes = []
    for node in onnx_graph.node:
        attrs = _attributes(node)
        if node.op_type == "Constant":
            if "value" not in attrs:
                raise ConfigError(f"{path}: Constant node {node.name or node.output[0]} is not "
                                  f"a tensor; fix: export with constant folding")
            constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        if node.op_type == "Resize" and not any(
                name in constants for name in node.input[2:4] if name):
            raise ConfigError(
                f"{path}: non-constant Resize scale (node {node.name or node.output[0]}); fix: "
                f"export a static graph (fixed input size, constant folding) so every Resize "
                f"has constant scales or sizes"
            )
        nodes.append(Node(node.op_type, node.name or node.output[0], list(node.input),
                          list(node.output), attrs))
    for name in [*inputs, *(o for n in nodes for o in n.outputs if o)]:
        if name not in shapes and name not in constants:
            raise ConfigError(
                f"{path}: tensor {name!r} has no static shape; fix: export with fixed input "
                f"sizes (dynamic=False) so every shape is known"
            )
    for name in inputs:
        if len(shapes[name]) == 4 and shapes[name][0] != 1:
            raise ConfigError(
                f"{path}: input {name!r} has batch size {shapes[name][0]}; fix: export with "
                f"batch size 1"
            )
    return Graph(nodes, shapes, constants, inputs, outputs)
