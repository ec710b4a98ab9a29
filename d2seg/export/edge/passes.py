"""Graph passes run before planning: simplify, fold, fuse, and put attributes in one form.

``optimize(graph, fuse_residual_add=...)`` runs them in order: identity removal, constant folding,
BatchNorm folding into the Conv in front of it, x·HardSigmoid(x) / x·Sigmoid(x) into HardSwish /
SiLU, Relu (Conv/Add) and ReLU6-style Clip (Conv) fusion into the producer,
(float only) Conv+Add(+Relu) fusion of residual connections, then :func:`canonicalize`, which
checks every node can be lowered and rewrites its attributes into what the emitter reads.
"""

import math

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator

from d2seg.errors import ConfigError
from d2seg.export.edge.ir import Graph, Node


def _unsupported(node: Node, why: str, fix: str) -> ConfigError:
    return ConfigError(f"{node.op} node {node.name!r}: {why}; fix: {fix}")


def _rename_tensor(graph: Graph, old: str, new: str) -> None:
    for node in graph.nodes:
        node.inputs = [new if i == old else i for i in node.inputs]
        node.outputs = [new if o == old else o for o in node.outputs]


def remove_identity(graph: Graph) -> None:
    """Drop Identity nodes; a graph output keeps its name (the producer is renamed instead)."""
    for node in [n for n in graph.nodes if n.op == "Identity"]:
        graph.nodes.remove(node)
        source, target = node.inputs[0], node.outputs[0]
        if target in graph.outputs and source not in graph.constants:
            _rename_tensor(graph, source, target)
        elif source in graph.constants:
            graph.constants[target] = graph.constants[source]
        else:
            _rename_tensor(graph, target, source)


def fold_constants(graph: Graph) -> None:
    """Evaluate nodes whose inputs are all constants (onnx's reference evaluator)."""
    for node in list(graph.nodes):
        inputs = [i for i in node.inputs if i]
        if not inputs or not all(i in graph.constants for i in inputs):
            continue
        proto = helper.make_node(node.op, node.inputs, node.outputs, **node.attrs)
        values = ReferenceEvaluator(proto).run(
            None, {i: graph.constants[i] for i in inputs}
        )
        for name, value in zip(node.outputs, values):
            graph.constants[name] = np.asarray(value)
        graph.nodes.remove(node)


def _single_use(graph: Graph, name: str) -> bool:
    return len(graph.consumers(name)) == 1 and name not in graph.outputs


def fold_batchnorm(graph: Graph) -> None:
    """Fold each BatchNormalization into the Conv that produces its input (exact in float64)."""
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        conv = graph.producer(bn.inputs[0])
        params = bn.inputs[1:5]
        if (conv is None or conv.op != "Conv" or not _single_use(graph, bn.inputs[0])
                or not all(p in graph.constants for p in params) or len(bn.outputs) > 1):
            raise _unsupported(bn, "only a BatchNormalization right after a Conv can be lowered",
                               "export the model in eval mode so BatchNorm follows its Conv")
        gamma, beta, mean, var = (graph.constants[p].astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        weight = graph.constants[conv.inputs[1]].astype(np.float64)
        bias = (graph.constants[conv.inputs[2]].astype(np.float64) if len(conv.inputs) > 2
                and conv.inputs[2] else np.zeros(weight.shape[0]))
        folded_w, folded_b = f"{conv.name}.folded_weight", f"{conv.name}.folded_bias"
        graph.constants[folded_w] = (weight * scale[:, None, None, None]).astype(np.float32)
        graph.constants[folded_b] = ((bias - mean) * scale + beta).astype(np.float32)
        conv.inputs = [conv.inputs[0], folded_w, folded_b]
        conv.outputs = list(bn.outputs)
        graph.nodes.remove(bn)


def _clip_bounds(graph: Graph, node: Node) -> list[float]:
    """[min, max] of a Clip (absent bounds are ±inf); the bounds must be constants."""
    bounds = []
    for index, default in ((1, -math.inf), (2, math.inf)):
        name = node.inputs[index] if len(node.inputs) > index else ""
        if name and name not in graph.constants:
            raise _unsupported(node, "non-constant Clip bounds",
                               "clip to constant bounds (ReLU6, F.hardtanh)")
        bounds.append(float(graph.constants[name]) if name else default)
    return bounds


def fuse_activation(graph: Graph) -> None:
    """Relu after a Conv or Add, or a constant Clip (ReLU6) after a Conv, as the producer's only
    consumer, becomes the producer's activation: ``activation`` "relu" or "clip" and
    ``clip`` = [min, max]."""
    for act in [n for n in graph.nodes if n.op in ("Relu", "Clip")]:
        producer = graph.producer(act.inputs[0])
        allowed = ("Conv", "Add") if act.op == "Relu" else ("Conv",)
        if (producer is None or producer.op not in allowed
                or producer.attrs.get("activation", "none") != "none"
                or not _single_use(graph, act.inputs[0])):
            continue
        producer.attrs["activation"] = "relu" if act.op == "Relu" else "clip"
        producer.attrs["clip"] = [0.0, math.inf] if act.op == "Relu" else \
            _clip_bounds(graph, act)
        producer.outputs = list(act.outputs)
        graph.nodes.remove(act)


def fuse_swish(graph: Graph) -> None:
    """x · HardSigmoid(x) (alpha 1/6, beta 1/2: torch's Hardswish export) becomes HardSwish(x)
    and x · Sigmoid(x) (SiLU) becomes the IR's own ``SiLU`` op: one elementwise kernel, one
    int8 lookup table, and no intermediate tensor."""
    for mul in [n for n in graph.nodes if n.op == "Mul"]:
        for k in (0, 1):
            gate = graph.producer(mul.inputs[k])
            x = mul.inputs[1 - k]
            if gate is None or gate.inputs[0] != x or not _single_use(graph, mul.inputs[k]):
                continue
            if gate.op == "HardSigmoid" and math.isclose(gate.attrs.get("alpha", 0.2), 1 / 6,
                                                         rel_tol=1e-6) \
                    and math.isclose(gate.attrs.get("beta", 0.5), 0.5):
                op = "HardSwish"
            elif gate.op == "Sigmoid":
                op = "SiLU"
            else:
                continue
            graph.nodes.remove(gate)
            mul.op, mul.inputs, mul.attrs = op, [x], {}
            break


def fuse_residual(graph: Graph) -> None:
    """Conv → Add(·, r) [→ Relu] becomes one Conv that adds ``r`` before its activation.

    The Conv moves to the Add's place, after ``r`` is computed; of two Conv inputs the one
    computed later is fused, so nothing else has to move.
    """
    for add in [n for n in graph.nodes if n.op == "Add"]:
        if any(i in graph.constants for i in add.inputs):
            continue
        candidates = []
        for k, name in enumerate(add.inputs):
            conv = graph.producer(name)
            other = add.inputs[1 - k]
            if (conv is not None and conv.op == "Conv" and _single_use(graph, name)
                    and conv.attrs.get("activation", "none") == "none"
                    and graph.shapes[name] == graph.shapes[other] and other != name):
                candidates.append((graph.nodes.index(conv), conv, other))
        if not candidates:
            continue
        _, conv, residual = max(candidates, key=lambda c: c[0])
        graph.nodes.remove(conv)
        conv.inputs = [*conv.inputs[:3], residual] if len(conv.inputs) >= 3 else \
            [*conv.inputs, "", residual]
        conv.attrs["residual"] = True
        conv.attrs["activation"] = add.attrs.get("activation", "none")
        if "clip" in add.attrs:
            conv.attrs["clip"] = add.attrs["clip"]
        conv.outputs = list(add.outputs)
        graph.nodes[graph.nodes.index(add)] = conv


def _conv_attrs(graph: Graph, node: Node) -> None:
    weight = graph.constants.get(node.inputs[1])
    if weight is None or weight.ndim != 4:
        raise _unsupported(node, "only 2-D convolutions with constant weights are supported",
                           "export a static graph of Conv2d layers")
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise _unsupported(node, f"auto_pad={node.attrs['auto_pad']}",
                           "export with explicit pads (torch.onnx does)")
    node.attrs.setdefault("strides", [1, 1])
    node.attrs.setdefault("dilations", [1, 1])
    node.attrs.setdefault("pads", [0, 0, 0, 0])
    node.attrs.setdefault("group", 1)
    node.attrs.setdefault("activation", "none")
    node.attrs.setdefault("clip", [-math.inf, math.inf])
    node.attrs["kernel"] = list(weight.shape[2:])


def _resize_attrs(graph: Graph, node: Node) -> None:
    mode = node.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear") or node.attrs.get("antialias", 0):
        raise _unsupported(node, f"Resize mode {mode!r}", "use bilinear or nearest upsampling")
    in_shape, out_shape = graph.shapes[node.inputs[0]], graph.shapes[node.outputs[0]]
    scales = node.inputs[2] if len(node.inputs) > 2 else ""
    sizes = node.inputs[3] if len(node.inputs) > 3 else ""
    if scales and scales in graph.constants and graph.constants[scales].size:
        values = graph.constants[scales].astype(np.float32)
    elif sizes and sizes in graph.constants:
        values = (graph.constants[sizes].astype(np.float32)
                  / np.asarray(in_shape, dtype=np.float32))
    else:
        raise _unsupported(node, "non-constant Resize scale",
                           "export a static graph (fixed input size) so scales are constants")
    if len(in_shape) != 4 or values[0] != 1 or values[1] != 1:
        raise _unsupported(node, "only spatial resizing of N×C×H×W tensors is supported",
                           "resize over H and W only")
    node.attrs["scales"] = [float(values[2]), float(values[3])]
    node.attrs.setdefault("coordinate_transformation_mode", "half_pixel")
    node.attrs.setdefault("nearest_mode", "round_prefer_floor")
    node.attrs["mode"] = mode
    if node.attrs["coordinate_transformation_mode"] not in (
            "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
        raise _unsupported(node, f"coordinate_transformation_mode "
                           f"{node.attrs['coordinate_transformation_mode']!r}",
                           "use align_corners=False (half_pixel) or align_corners=True")
    node.inputs = node.inputs[:1]


def _constant_ints(graph: Graph, node: Node, index: int, what: str) -> np.ndarray | None:
    """Input ``index`` of ``node`` as int64 values; None when the optional input is absent."""
    name = node.inputs[index] if len(node.inputs) > index else ""
    if not name:
        return None
    if name not in graph.constants:
        raise _unsupported(node, f"non-constant {what}", "export a static graph (fixed input "
                           "size, export_semantic_onnx(..., dynamic=False)) so it is a constant")
    return graph.constants[name].astype(np.int64).reshape(-1)


def _axes(graph: Graph, node: Node, index: int, count: int) -> list[int]:
    rank = len(graph.shapes[node.inputs[0]])
    axes = _constant_ints(graph, node, index, "axes")
    return list(range(count)) if axes is None else [int(a) % rank for a in axes]


def _spatial_window(node: Node, shape: tuple[int, ...], begin: list[int], end: list[int],
                    what: str) -> None:
    """Check a Pad/Slice leaves N and C alone; store ``window``: the input row and column of
    output position (0, 0), negative for padding (what ``d2seg_rt::copy_window`` reads)."""
    if len(shape) != 4 or begin[:2] != [0, 0] or end[:2] != [0, 0]:
        raise _unsupported(node, f"only {what} of the H and W axes of N×C×H×W is supported",
                           f"apply the {node.op} to H and W only")
    node.attrs["window"] = [begin[2], begin[3]]
    node.inputs = node.inputs[:1]


def _pad_attrs(graph: Graph, node: Node) -> None:
    """Constant zero padding: pads (and axes) constants; ``value`` absent or 0."""
    shape = graph.shapes[node.inputs[0]]
    pads = _constant_ints(graph, node, 1, "pads")
    value = node.inputs[2] if len(node.inputs) > 2 else ""
    axes = _axes(graph, node, 3, len(shape))
    if (node.attrs.get("mode", "constant") != "constant" or pads is None
            or len(pads) != 2 * len(axes) or (pads < 0).any()
            or (value and (value not in graph.constants or graph.constants[value].any()))):
        raise _unsupported(node, "only constant zero padding by constant non-negative pads is "
                           "supported", "pad with zeros (F.pad's default)")
    before, after = [0] * len(shape), [0] * len(shape)
    for k, axis in enumerate(axes):
        before[axis], after[axis] = int(pads[k]), int(pads[k + len(axes)])
    _spatial_window(node, shape, [-b for b in before], [-a for a in after], "padding")


def _slice_attrs(graph: Graph, node: Node) -> None:
    """A crop: constant starts/ends (and axes), steps 1; ONNX's clamping of out-of-range ends."""
    shape = graph.shapes[node.inputs[0]]
    starts = _constant_ints(graph, node, 1, "starts")
    ends = _constant_ints(graph, node, 2, "ends")
    steps = _constant_ints(graph, node, 4, "steps")
    if steps is not None and (steps != 1).any():
        raise _unsupported(node, "Slice steps other than 1", "crop with step 1")
    begin, end = [0] * len(shape), [0] * len(shape)  # end: elements cut off at the end
    for axis, start, stop in zip(_axes(graph, node, 3, len(starts)), starts, ends):
        dim = shape[axis]
        start, stop = int(start) + dim * (start < 0), int(stop) + dim * (stop < 0)
        begin[axis] = min(max(start, 0), dim)
        end[axis] = dim - min(max(stop, begin[axis]), dim)
    _spatial_window(node, shape, begin, end, "slicing")


def _axis(graph: Graph, node: Node, default: int) -> int:
    rank = len(graph.shapes[node.inputs[0]])
    axis = node.attrs.get("axis", default)
    return axis + rank if axis < 0 else axis


def _binary_attrs(graph: Graph, node: Node) -> None:
    """Elementwise ops: two same-shape activations, or an activation and a constant that
    broadcasts over it (scalar, per channel, or full; stored as ``constant``/``period``)."""
    out_shape = graph.shapes[node.outputs[0]]
    a, b = node.inputs
    if a not in graph.constants and b not in graph.constants:
        node.attrs["broadcast"] = "none"
        if graph.shapes[a] == graph.shapes[b]:
            return
        if graph.shapes[a] != out_shape:
            a, b = b, a
        gate = graph.shapes[b]
        if (node.op != "Mul" or len(out_shape) != 4 or graph.shapes[a] != out_shape
                or tuple(gate) != (out_shape[0], out_shape[1], 1, 1)):
            raise _unsupported(node, f"broadcast between activations {graph.shapes[a]} and "
                               f"{gate}", "make both operands the same shape, or multiply by a "
                               "per-channel N×C×1×1 gate (squeeze-excite)")
        node.inputs = [a, b]
        node.attrs["broadcast"] = "channel"
        return
    node.attrs["constant_first"] = a in graph.constants
    constant = graph.constants[a if a in graph.constants else b].astype(np.float32)
    if graph.shapes[b if a in graph.constants else a] != out_shape:
        raise _unsupported(node, "the constant operand enlarges the output",
                           "broadcast the constant to the activation's shape")
    full = np.broadcast_to(constant, out_shape)
    inner = int(np.prod(out_shape[2:])) if len(out_shape) > 2 else 1
    if constant.size == 1:
        values, period = constant.reshape(1), int(np.prod(out_shape))
    elif (len(out_shape) >= 2 and constant.ndim == len(out_shape)
          and all(d == 1 for k, d in enumerate(constant.shape) if k != 1)):
        values, period = constant.reshape(-1), inner
    else:
        values, period = np.ascontiguousarray(full).reshape(-1), 1
    name = f"{node.name}.constant"
    graph.constants[name] = values
    node.inputs = [b if a in graph.constants else a, name]
    node.attrs["period"] = period


def canonicalize(graph: Graph) -> None:
    """Check every node can be lowered and normalise its attributes for the emitter."""
    for node in graph.nodes:
        if node.op == "Conv":
            _conv_attrs(graph, node)
        elif node.op == "ConvTranspose":
            _conv_attrs(graph, node)
            node.attrs.setdefault("output_padding", [0, 0])
            if node.attrs["group"] != 1:
                raise _unsupported(node, "grouped ConvTranspose", "use group=1")
        elif node.op == "MaxPool":
            if len(node.outputs) > 1 and node.outputs[1]:
                raise _unsupported(node, "MaxPool indices output", "do not return indices")
            node.attrs.setdefault("strides", [1, 1])
            node.attrs.setdefault("dilations", [1, 1])
            node.attrs.setdefault("pads", [0, 0, 0, 0])
            node.outputs = node.outputs[:1]
        elif node.op == "Resize":
            _resize_attrs(graph, node)
        elif node.op in ("Add", "Sub", "Mul", "Div"):
            _binary_attrs(graph, node)
        elif node.op in ("Softmax", "ArgMax"):
            if _axis(graph, node, 1 if node.op == "Softmax" else 0) != 1 or \
                    len(graph.shapes[node.inputs[0]]) != 4 or \
                    node.attrs.get("select_last_index", 0):
                raise _unsupported(node, "only the channel axis (axis=1) of N×C×H×W",
                                   "apply it over the class channel")
        elif node.op == "Concat":
            node.attrs["axis"] = _axis(graph, node, 0)
        elif node.op == "Pad":
            _pad_attrs(graph, node)
        elif node.op == "Slice":
            _slice_attrs(graph, node)
        elif node.op == "Clip":
            node.attrs["clip"] = _clip_bounds(graph, node)
            node.inputs = node.inputs[:1]
        elif node.op == "HardSigmoid":
            node.attrs.setdefault("alpha", 0.2)
            node.attrs.setdefault("beta", 0.5)
        elif node.op == "GlobalAveragePool":
            if len(graph.shapes[node.inputs[0]]) != 4:
                raise _unsupported(node, "only N×C×H×W inputs", "pool a 4-D feature map")
        elif node.op == "BatchNormalization":
            raise _unsupported(node, "BatchNormalization not folded", "put it after a Conv")


def optimize(graph: Graph, *, fuse_residual_add: bool = True) -> Graph:
    """Run every pass in order (in place) and return ``graph``.

    ``fuse_residual_add=False`` keeps residual Adds as their own node (the int8 path requantises
    the two operands of an Add, which a Conv epilogue does not do).
    """
    remove_identity(graph)
    fold_constants(graph)
    fold_batchnorm(graph)
    fuse_swish(graph)
    fuse_activation(graph)
    if fuse_residual_add:
        fuse_residual(graph)
    canonicalize(graph)
    for node in graph.nodes:
        for name in node.inputs:
            if name and name not in graph.constants and name not in graph.shapes:
                raise ConfigError(f"tensor {name!r} has no static shape; fix: export a static "
                                  f"graph with a fixed input size")
    return graph

