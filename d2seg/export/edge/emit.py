"""C++17 code generation: NAME.h / NAME.cpp over the header-only kernels of deploy/runtime.

Every constant (packed weights, biases, requantisation multipliers, resampling tables) goes
into one ``static const`` byte blob, 16-byte aligned per array, written as a string literal
(compilers read a string literal an order of magnitude faster than an initialiser list of the
same size). Every intermediate tensor and scratch buffer lives at a fixed offset of one static
arena planned by :mod:`d2seg.export.edge.planner`. The model code has no allocation,
exceptions or I/O; ``NAME_run`` is a C ABI entry point (not reentrant: one static arena).
"""

import math
from dataclasses import dataclass, field

import numpy as np

from d2seg.errors import ConfigError
from d2seg.export.edge.ir import Graph, Node
from d2seg.export.edge.planner import ArenaPlan, Buffer, aligned, plan_arena
from d2seg.export.edge.quantize import quantize_multiplier, quantize_weights

CONV_ROWS = 6  # d2seg_rt::kConvRows: output channels per packed weight panel
S8_SCRATCH_LAYOUT = 2  # d2seg_rt::kS8ScratchLayout: scratch of conv2d_s8 / resize_bilinear_s8
COL_BLOCK = 256  # d2seg_rt::kColBlock: im2col columns built at once
ADD_LEFT_SHIFT = 20  # headroom bits of the int8 Add (TFLite)
ITEM_BYTES = {"float32": 4, "int8": 1}
C_TYPES = {"float32": "float", "int8": "int8_t"}
_CONSTANT_C_TYPES = {**C_TYPES, "int32": "int32_t", "int16": "int16_t"}

_ESCAPES = {i: chr(i) if 32 <= i < 127 and chr(i) not in '\\"?' else f"\\{i:03o}"
            for i in range(256)}


def pack_conv_weights(weight: np.ndarray, groups: int) -> np.ndarray:
    """M×Cg×kh×kw → per group, panels of CONV_ROWS output channels, the layout
    ``d2seg_rt::packed_weight`` reads: [k // G][row][k % G] with G = 4 for int8 (k-quads for
    dot-product instructions) and 1 for float; K is padded to a multiple of G, missing rows
    and k are zero."""
    m = weight.shape[0]
    per_group, depth = m // groups, int(np.prod(weight.shape[1:]))
    group = 4 if weight.dtype == np.int8 else 1  # d2seg_rt::kDepthGroup
    rows = math.ceil(per_group / CONV_ROWS) * CONV_ROWS
    padded = math.ceil(depth / group) * group
    packed = np.zeros((groups, rows, padded), dtype=weight.dtype)
    packed[:, :per_group, :depth] = weight.reshape(groups, per_group, depth)
    packed = packed.reshape(groups, rows // CONV_ROWS, CONV_ROWS, padded // group, group)
    return packed.transpose(0, 1, 3, 2, 4)


def resize_axis_table(in_len: int, out_len: int, scale: float, attrs: dict):
    """Source indices and weights along one axis, computed in float32 as onnxruntime does.

    Returns (i0, i1, w0, w1): output position o reads i0[o] with weight w0[o] and i1[o] with
    w1[o] (nearest: i0 only, w0 = 1).
    """
    f32 = np.float32
    x = np.arange(out_len, dtype=f32)
    s = f32(scale)
    mode = attrs["coordinate_transformation_mode"]
    if mode in ("half_pixel", "pytorch_half_pixel"):
        orig = (x + f32(0.5)) / s - f32(0.5)
        if mode == "pytorch_half_pixel" and out_len == 1:
            orig = np.zeros_like(orig)
    elif mode == "align_corners":
        orig = (x * f32(in_len - 1) / f32(out_len - 1)) if out_len > 1 else np.zeros_like(x)
    else:
        orig = x / s
    if attrs["mode"] == "nearest":
        rule = attrs["nearest_mode"]
        if rule == "floor":
            idx = np.floor(orig)
        elif rule == "ceil":
            idx = np.ceil(orig)
        elif rule == "round_prefer_ceil":
            idx = np.floor(orig + f32(0.5))
        else:
            idx = np.where(orig == np.floor(orig) + f32(0.5), np.floor(orig), np.round(orig))
        i0 = np.clip(idx, 0, in_len - 1).astype(np.int32)
        return i0, i0, np.ones(out_len, f32), np.zeros(out_len, f32)
    orig = np.clip(orig, f32(0), f32(in_len - 1))
    i0 = np.minimum(orig.astype(np.int32), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    d1 = np.abs(orig - i0.astype(f32))
    d2 = np.abs(orig - i1.astype(f32))
    same = i0 == i1
    d1[same], d2[same] = f32(0.5), f32(0.5)
    return i0, i1, d2, d1


class _Blob:
    """Constants packed into one byte array, each 16-byte aligned."""

    def __init__(self):
        self.data = bytearray()

    def add(self, array: np.ndarray, dtype: str) -> int:
        self.data.extend(b"\0" * (aligned(len(self.data)) - len(self.data)))
        offset = len(self.data)
        self.data.extend(np.ascontiguousarray(array, dtype=dtype).tobytes())
        return offset

    def literal(self) -> str:
        lines = []
        for start in range(0, len(self.data), 96):
            lines.append('    "' + self.data[start:start + 96].decode("latin-1")
                         .translate(_ESCAPES) + '"')
        return "\n".join(lines) or '    ""'


@dataclass
class _Program:
    graph: Graph
    blob: _Blob = field(default_factory=_Blob)
    statements: list[str] = field(default_factory=list)
    scratch: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (bytes, step)
    macs: int = 0
    ids: dict[str, str] = field(default_factory=dict)

    def offset_constant(self, name: str) -> str:
        """C++ name of the arena offset of buffer ``name`` (unique per tensor)."""
        if name not in self.ids:
            tail = "".join(c if c.isalnum() else "_" for c in name)[-40:]
            self.ids[name] = f"k{len(self.ids)}_{tail}"
        return self.ids[name]

    def ref(self, name: str) -> str:
        """C++ expression of a tensor's pointer."""
        graph = self.graph
        if name == graph.inputs[0]:
            return "input"
        if name in graph.outputs:
            return "output"
        return f"arena<{C_TYPES[graph.dtype(name)]}>({self.offset_constant(name)})"

    def const(self, array: np.ndarray, dtype: str) -> str:
        return f"blob<{_CONSTANT_C_TYPES[dtype]}>({self.blob.add(array, dtype)})"

    def add_scratch(self, node: Node, nbytes: int, step: int) -> str:
        name = f"{node.name}#scratch"
        self.scratch[name] = (nbytes, step)
        return name


def _size(shape) -> int:
    return int(np.prod(shape))


def _conv_shape(graph: Graph, node: Node) -> str:
    c, h, w = graph.shapes[node.inputs[0]][1:]
    m, oh, ow = graph.shapes[node.outputs[0]][1:]
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["strides"]
    dh, dw = node.attrs["dilations"]
    pt, pl = node.attrs["pads"][:2]
    groups = node.attrs.get("group", 1)
    return (f"ConvShape{{{c}, {h}, {w}, {m}, {oh}, {ow}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}, "
            f"{dh}, {dw}, {groups}}}")


def _col_elements(graph: Graph, node: Node) -> int:
    c, h, w = graph.shapes[node.inputs[0]][1:]
    oh, ow = graph.shapes[node.outputs[0]][2:]
    kh, kw = node.attrs["kernel"]
    pointwise = (kh, kw) == (1, 1) and node.attrs["strides"] == [1, 1] and \
        node.attrs["pads"][:2] == [0, 0] and (oh, ow) == (h, w)
    block_rows = min(oh, max(1, COL_BLOCK // ow))  # d2seg_rt::conv_block_rows
    return 0 if pointwise else c // node.attrs["group"] * kh * kw * block_rows * ow


def _s8_scratch_bytes(graph: Graph, node: Node) -> int:
    """d2seg_rt::conv_s8_scratch_bytes: im2col columns, then one column block of B packed in
    k-quads for the VNNI GEMM (reserved on every build so the arena does not depend on flags)."""
    depth = graph.shapes[node.inputs[0]][1] // node.attrs["group"] * \
        int(np.prod(node.attrs["kernel"]))
    return _col_elements(graph, node) + (depth + 3) // 4 * 4 * COL_BLOCK


FLT_MAX = float(np.finfo(np.float32).max)


def _float(value: float) -> str:
    """A C++ float literal; ±inf becomes ±FLT_MAX (a clamp to it is the identity)."""
    return f"{float(np.float32(min(max(value, -FLT_MAX), FLT_MAX)))!r}f"


def _quantized_clip(node: Node, scale: float, zero: int) -> tuple[int, int]:
    """The int8 output clamp of a Conv's fused activation."""
    lo, hi = node.attrs["clip"]
    q_lo = -128 if lo == -math.inf else int(np.clip(round(lo / scale) + zero, -128, 127))
    q_hi = 127 if hi == math.inf else int(np.clip(round(hi / scale) + zero, -128, 127))
    return q_lo, q_hi


def is_depthwise(graph: Graph, node: Node) -> bool:
    """One input channel per group and one output per channel: the direct depthwise kernel."""
    channels = graph.shapes[node.inputs[0]][1]
    weight = graph.constants[node.inputs[1]]
    return node.attrs["group"] == channels == weight.shape[0] and weight.shape[1] == 1 \
        and channels > 1 and not node.attrs.get("residual")


def _emit_conv(p: _Program, node: Node, step: int) -> None:
    g = p.graph
    weight = g.constants[node.inputs[1]]
    m = weight.shape[0]
    bias_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    bias = g.constants[bias_name].astype(np.float64) if bias_name else np.zeros(m)
    groups = node.attrs["group"]
    out = g.shapes[node.outputs[0]]
    p.macs += _size(out) * _size(weight.shape[1:])
    x, y = node.inputs[0], node.outputs[0]
    depthwise = is_depthwise(g, node)
    int8 = g.dtype(y) == "int8"
    if depthwise:
        acc_type = "int32_t" if int8 else "float"
        scratch = p.add_scratch(node, 4 * out[3], step)  # one output row of accumulators
        scratch = f"arena<{acc_type}>({p.offset_constant(scratch)})"
    if not int8:
        lo, hi = (_float(v) for v in node.attrs["clip"])
        if depthwise:
            p.statements.append(
                f"depthwise_conv2d_f32({p.ref(x)}, {_conv_shape(g, node)}, "
                f"{p.const(weight, 'float32')}, {p.const(bias, 'float32')}, {lo}, {hi}, "
                f"{p.ref(y)}, {scratch});")
            return
        col = _col_elements(g, node)
        scratch = f"arena<float>({p.offset_constant(p.add_scratch(node, 4 * col, step))})" \
            if col else "nullptr"
        residual = p.ref(node.inputs[3]) if node.attrs.get("residual") else "nullptr"
        p.statements.append(
            f"conv2d_f32({p.ref(x)}, {_conv_shape(g, node)}, "
            f"{p.const(pack_conv_weights(weight, groups), 'float32')}, "
            f"{p.const(bias, 'float32')}, {residual}, {lo}, {hi}, {p.ref(y)}, {scratch});")
        return
    (s_in, z_in), (s_out, z_out) = g.quant[x], g.quant[y]
    wq, w_scale = quantize_weights(weight)
    bias_q = np.round(bias / (s_in * w_scale)).astype(np.int64)
    bias_q -= z_in * wq.reshape(m, -1).astype(np.int64).sum(axis=1)
    multipliers = [quantize_multiplier(s_in * ws / s_out) for ws in w_scale]
    act_min, act_max = _quantized_clip(node, s_out, z_out)
    quant = (f"ConvQuant{{{z_in}, {z_out}, {act_min}, {act_max}, "
             f"{p.const([q for q, _ in multipliers], 'int32')}, "
             f"{p.const([s for _, s in multipliers], 'int32')}}}")
    if depthwise:
        p.statements.append(
            f"depthwise_conv2d_s8({p.ref(x)}, {_conv_shape(g, node)}, {p.const(wq, 'int8')}, "
            f"{p.const(bias_q, 'int32')}, {quant}, {p.ref(y)}, {scratch});")
        return
    scratch = "arena<int8_t>(" \
        f"{p.offset_constant(p.add_scratch(node, _s8_scratch_bytes(g, node), step))})"
    p.statements.append(
        f"conv2d_s8({p.ref(x)}, {_conv_shape(g, node)}, "
        f"{p.const(pack_conv_weights(wq, groups), 'int8')}, {p.const(bias_q, 'int32')}, "
        f"{quant}, {p.ref(y)}, {scratch});")


def _emit_conv_transpose(p: _Program, node: Node, step: int) -> None:
    g = p.graph
    weight = g.constants[node.inputs[1]]
    m = weight.shape[1]
    bias = g.constants[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else \
        np.zeros(m)
    p.macs += _size(g.shapes[node.inputs[0]]) * _size(weight.shape[1:])
    p.statements.append(
        f"conv_transpose2d_f32({p.ref(node.inputs[0])}, {_conv_shape(g, node)}, "
        f"{p.const(weight, 'float32')}, {p.const(bias, 'float32')}, {p.ref(node.outputs[0])});")


def _emit_max_pool(p: _Program, node: Node, step: int) -> None:
    g = p.graph
    c, h, w = g.shapes[node.inputs[0]][1:]
    oh, ow = g.shapes[node.outputs[0]][2:]
    kh, kw = node.attrs["kernel_shape"]
    sh, sw = node.attrs["strides"]
    dh, dw = node.attrs["dilations"]
    pt, pl = node.attrs["pads"][:2]
    p.statements.append(
        f"max_pool<{C_TYPES[g.dtype(node.outputs[0])]}>({p.ref(node.inputs[0])}, PoolShape{{"
        f"{c}, {h}, {w}, {oh}, {ow}, {kh}, {kw}, {sh}, {sw}, {pt}, {pl}, {dh}, {dw}}}, "
        f"{p.ref(node.outputs[0])});")


def _emit_resize(p: _Program, node: Node, step: int) -> None:
    g = p.graph
    c, h, w = g.shapes[node.inputs[0]][1:]
    oh, ow = g.shapes[node.outputs[0]][2:]
    int8 = g.dtype(node.outputs[0]) == "int8"
    tables = []
    for in_len, out_len, scale in ((h, oh, node.attrs["scales"][0]),
                                   (w, ow, node.attrs["scales"][1])):
        i0, i1, w0, w1 = resize_axis_table(in_len, out_len, scale, node.attrs)
        if int8:
            w0 = np.round(w0.astype(np.float64) * 2048).astype(np.int16)
            w1 = (2048 - w0).astype(np.int16)
        dtype = "int16" if int8 else "float32"
        tables += [p.const(i0, "int32"), p.const(i1, "int32"), p.const(w0, dtype),
                   p.const(w1, dtype)]
    weight_type = "int16_t" if int8 else "float"
    table = (f"ResizeTables<{weight_type}>{{{c}, {h}, {w}, {oh}, {ow}, "
             f"{', '.join(tables)}}}")
    x, y = p.ref(node.inputs[0]), p.ref(node.outputs[0])
    if node.attrs["mode"] == "nearest":
        p.statements.append(f"resize_nearest({x}, {table}, {y});")
    elif not int8:
        p.statements.append(f"resize_bilinear_f32({x}, {table}, {y});")
    else:
        row = p.offset_constant(p.add_scratch(node, 4 * w, step))  # blended input row, int32
        p.statements.append(f"resize_bilinear_s8({x}, {table}, {y}, arena<int32_t>({row}));")


def _emit_window(p: _Program, node: Node, step: int) -> None:
    """Pad and Slice: a copy of a window of the input. On int8 the copy needs the output to
    share the input's (scale, zero point); a Pad fills with the zero point (real 0)."""
    g = p.graph
    x, y = node.inputs[0], node.outputs[0]
    c, h, w = g.shapes[x][1:]
    oh, ow = g.shapes[y][2:]
    top, left = node.attrs["window"]
    fill = g.quant[y][1] if g.dtype(y) == "int8" else 0
    p.statements.append(
        f"copy_window<{C_TYPES[g.dtype(y)]}>({p.ref(x)}, WindowShape{{{c}, {h}, {w}, {oh}, "
        f"{ow}, {top}, {left}}}, {fill}, {p.ref(y)});")


def _emit_binary(p: _Program, node: Node, step: int) -> None:
    g = p.graph
    y = node.outputs[0]
    n = _size(g.shapes[y])
    op = {"Add": "kAdd", "Sub": "kSub", "Mul": "kMul", "Div": "kDiv"}[node.op]
    relu = "true" if node.attrs.get("activation") == "relu" else "false"
    a, b = node.inputs
    channel = node.attrs.get("broadcast") == "channel"
    channels, pixels = g.shapes[y][1], _size(g.shapes[y][2:])
    if g.dtype(y) == "int8" and node.op == "Mul":
        (sa, za), (sb, zb), (so, zo) = g.quant[a], g.quant[b], g.quant[y]
        m, shift = quantize_multiplier(sa * sb / so)
        p.statements.append(
            f"mul_s8({p.ref(a)}, {p.ref(b)}, {n}, {pixels if channel else 1}, "
            f"MulQuant{{{za}, {zb}, {zo}, {m}, {shift}}}, {p.ref(y)});")
    elif g.dtype(y) == "int8":
        (sa, za), (sb, zb), (so, zo) = g.quant[a], g.quant[b], g.quant[y]
        twice_max = 2 * max(sa, sb)
        ma, sha = quantize_multiplier(sa / twice_max)
        mb, shb = quantize_multiplier(sb / twice_max)
        mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * so))
        act_min = zo if relu == "true" else -128
        p.statements.append(
            f"add_s8({p.ref(a)}, {p.ref(b)}, {n}, AddQuant{{{za}, {zb}, {zo}, {ma}, {sha}, "
            f"{mb}, {shb}, {mo}, {sho}, {ADD_LEFT_SHIFT}, {act_min}, 127}}, {p.ref(y)});")
    elif channel:
        p.statements.append(f"mul_channel_f32({p.ref(a)}, {p.ref(b)}, {channels}, {pixels}, "
                            f"{p.ref(y)});")
    elif b in g.constants:
        values = g.constants[b]
        first = "true" if node.attrs["constant_first"] else "false"
        p.statements.append(
            f"binary_const_f32<BinaryOp::{op}>({p.ref(a)}, {p.const(values, 'float32')}, "
            f"{values.size}, {node.attrs['period']}, {n}, {first}, {relu}, {p.ref(y)});")
    else:
        p.statements.append(
            f"binary_f32<BinaryOp::{op}>({p.ref(a)}, {p.ref(b)}, {n}, {relu}, {p.ref(y)});")


def _emit_concat(p: _Program, node: Node, step: int) -> None:
    g = p.graph
    y = node.outputs[0]
    axis = node.attrs["axis"]
    out_shape = g.shapes[y]
    outer = _size(out_shape[:axis])
    out_block = _size(out_shape[axis:])
    offset = 0
    for x in node.inputs:
        block = _size(g.shapes[x][axis:])
        if g.dtype(y) == "int8" and g.quant[x] != g.quant[y]:
            (s_in, z_in), (s_out, z_out) = g.quant[x], g.quant[y]
            m, s = quantize_multiplier(s_in / s_out)
            p.statements.append(f"requantize_s8({p.ref(x)}, {block}, {z_in}, {m}, {s}, {z_out}, "
                                f"{p.ref(y)} + {offset});")
        else:
            p.statements.append(f"concat_part({p.ref(x)}, {outer}, {block}, {p.ref(y)}, "
                                f"{out_block}, {offset});")
        offset += block


def _emit_unary(p: _Program, node: Node, step: int) -> None:
    g = p.graph
    x, y = node.inputs[0], node.outputs[0]
    shape = g.shapes[x]
    n = _size(shape)
    if node.op == "Relu":
        if g.dtype(y) == "int8":
            p.statements.append(f"relu_s8({p.ref(x)}, {n}, {g.quant[y][1]}, {p.ref(y)});")
        else:
            p.statements.append(f"relu_f32({p.ref(x)}, {n}, {p.ref(y)});")
    elif node.op in ELEMENTWISE and g.dtype(y) == "int8":
        table = lookup_table(ELEMENTWISE[node.op](node), g.quant[x], g.quant[y])
        p.statements.append(f"lookup_s8({p.ref(x)}, {n}, {p.const(table, 'int8')}, "
                            f"{p.ref(y)});")
    elif node.op == "Sigmoid":
        p.statements.append(f"sigmoid_f32({p.ref(x)}, {n}, {p.ref(y)});")
    elif node.op == "SiLU":
        p.statements.append(f"silu_f32({p.ref(x)}, {n}, {p.ref(y)});")
    elif node.op == "HardSwish":
        p.statements.append(f"hard_swish_f32({p.ref(x)}, {n}, {p.ref(y)});")
    elif node.op == "HardSigmoid":
        p.statements.append(f"hard_sigmoid_f32({p.ref(x)}, {n}, {_float(node.attrs['alpha'])}, "
                            f"{_float(node.attrs['beta'])}, {p.ref(y)});")
    elif node.op == "Clip":
        lo, hi = (_float(v) for v in node.attrs["clip"])
        p.statements.append(f"clip_f32({p.ref(x)}, {n}, {lo}, {hi}, {p.ref(y)});")
    elif node.op == "GlobalAveragePool" and g.dtype(y) == "int8":
        (s_in, z_in), (s_out, z_out) = g.quant[x], g.quant[y]
        m, shift = quantize_multiplier(s_in / (s_out * _size(shape[2:])))
        p.statements.append(f"global_avg_pool_s8({p.ref(x)}, {shape[1]}, {_size(shape[2:])}, "
                            f"{z_in}, {m}, {shift}, {z_out}, {p.ref(y)});")
    elif node.op == "GlobalAveragePool":
        p.statements.append(f"global_avg_pool_f32({p.ref(x)}, {shape[1]}, {_size(shape[2:])}, "
                            f"{p.ref(y)});")
    elif node.op in ("Softmax", "ArgMax"):
        kernel = "softmax" if node.op == "Softmax" else "argmax"
        p.statements.append(f"{kernel}_channels_f32({p.ref(x)}, {shape[1]}, "
                            f"{_size(shape[2:])}, {p.ref(y)});")
    elif node.op == "QuantizeLinear":
        scale, zero = g.quant[y]
        p.statements.append(f"quantize_f32({p.ref(x)}, {n}, {float(np.float32(scale))!r}f, "
                            f"{zero}, {p.ref(y)});")
    elif node.op == "DequantizeLinear":
        scale, zero = g.quant[x]
        p.statements.append(f"dequantize_f32({p.ref(x)}, {n}, {float(np.float32(scale))!r}f, "
                            f"{zero}, {p.ref(y)});")


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


# Elementwise ops: the float function (float64 in, float64 out) an int8 lookup table samples.
ELEMENTWISE = {
    "Sigmoid": lambda node: _sigmoid,
    "SiLU": lambda node: lambda v: v * _sigmoid(v),
    "HardSwish": lambda node: lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
    "HardSigmoid": lambda node: lambda v: np.clip(node.attrs["alpha"] * v + node.attrs["beta"],
                                                  0, 1),
    "Clip": lambda node: lambda v: np.clip(v, *node.attrs["clip"]),
}


def lookup_table(function, quant_in: tuple[float, int], quant_out: tuple[float, int]):
    """256 int8 outputs of ``function`` for q = -128..127 (index q + 128)."""
    (s_in, z_in), (s_out, z_out) = quant_in, quant_out
    real = function(s_in * (np.arange(-128, 128, dtype=np.float64) - z_in))
    return np.clip(np.round(real / s_out) + z_out, -128, 127).astype(np.int8)


_EMITTERS = {
    "Conv": _emit_conv, "ConvTranspose": _emit_conv_transpose, "MaxPool": _emit_max_pool,
    "Resize": _emit_resize, "Add": _emit_binary, "Sub": _emit_binary, "Mul": _emit_binary,
    "Div": _emit_binary, "Concat": _emit_concat, "Pad": _emit_window, "Slice": _emit_window,
    "Relu": _emit_unary, "Sigmoid": _emit_unary, "Softmax": _emit_unary, "ArgMax": _emit_unary,
    "Clip": _emit_unary, "HardSigmoid": _emit_unary, "HardSwish": _emit_unary, "SiLU": _emit_unary,
    "GlobalAveragePool": _emit_unary,
    "QuantizeLinear": _emit_unary, "DequantizeLinear": _emit_unary,
}


def _buffers(program: _Program) -> list[Buffer]:
    """Lifetimes (node steps) of every arena buffer: activations other than the graph's input
    and output, plus per-node scratch."""
    graph = program.graph
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for step, node in enumerate(graph.nodes):
        for name in node.outputs:
            first.setdefault(name, step)
            last[name] = max(last.get(name, step), step)
        for name in node.inputs:
            if name in first:
                last[name] = step
    external = {graph.inputs[0], *graph.outputs}
    buffers = [
        Buffer(name, _size(graph.shapes[name]) * ITEM_BYTES[graph.dtype(name)], first[name],
               last[name])
        for name in first if name not in external
    ]
    buffers += [Buffer(name, nbytes, step, step)
                for name, (nbytes, step) in program.scratch.items()]
    return buffers


@dataclass(frozen=True)
class GeneratedModel:
    """The sources of one lowered model and the numbers the report prints."""

    header: str
    source: str
    plan: ArenaPlan
    weights_bytes: int
    macs: int


def emit_model(graph: Graph, name: str, source_name: str) -> GeneratedModel:
    """C++ sources for ``graph`` (optimised, optionally quantised) with entry point
    ``extern "C" int {name}_run(const float* input, float* output)``."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ConfigError(f"{source_name}: the graph has {len(graph.inputs)} inputs and "
                          f"{len(graph.outputs)} outputs; fix: export one image input and one "
                          f"output (the semantic logits)")
    if graph.inputs[0] in graph.outputs:
        raise ConfigError(f"{source_name}: the graph's output is its input; fix: export a model")
    program = _Program(graph)
    for step, node in enumerate(graph.nodes):
        _EMITTERS[node.op](program, node, step)
    plan = plan_arena(_buffers(program))
    in_shape, out_shape = graph.shapes[graph.inputs[0]], graph.shapes[graph.outputs[0]]
    macro = name.upper()
    precision = "int8" if any(d == "int8" for d in graph.dtypes.values()) else "float32"
    producer = graph.producer(graph.outputs[0])
    output_is_index = int(producer is not None and producer.op == "ArgMax")
    int8_guard = (f"static_assert(d2seg_rt::kS8ScratchLayout == {S8_SCRATCH_LAYOUT}, "
                  f"\"regenerate: runtime int8 scratch layout changed\");\n"
                  if precision == "int8" else "")
    header = f"""// {name}.h: generated by deploy/lower_to_cpp.py from {source_name}; do not edit.
#ifndef {macro}_H
#define {macro}_H

#define {macro}_INPUT_C {in_shape[1]}
#define {macro}_INPUT_H {in_shape[2]}
#define {macro}_INPUT_W {in_shape[3]}
#define {macro}_OUTPUT_C {out_shape[1]}
#define {macro}_OUTPUT_H {out_shape[2]}
#define {macro}_OUTPUT_W {out_shape[3]}
// 1: the output holds class indices (the graph ends in ArgMax), 0: logits or scores.
#define {macro}_OUTPUT_IS_INDEX {output_is_index}
#define {macro}_PRECISION "{precision}"
#define {macro}_ARENA_BYTES {plan.size}
#define {macro}_WEIGHTS_BYTES {len(program.blob.data)}

#ifdef __cplusplus
extern "C" {{
#endif

// input: 1 x C x H x W float pixels 0-255 (planar); output: 1 x OUTPUT_C x OUTPUT_H x OUTPUT_W.
// Returns 0. Uses one static arena: not reentrant.
int {name}_run(const float* input, float* output);

#ifdef __cplusplus
}}
#endif

#endif  // {macro}_H
"""
    offsets = "\n".join(
        f"constexpr long {program.offset_constant(n)} = {plan.offsets[n]};"
        for n in sorted(plan.offsets, key=plan.offsets.get))
    body = "\n".join(f"  {s}" for s in program.statements)
    source = f"""// {name}.cpp: generated by deploy/lower_to_cpp.py from {source_name}; do not edit.
#include "{name}.h"

#include <cstdint>

#include "d2seg_kernels.h"

// The weight packing and the arena's im2col scratch were computed for this kernel layout.
static_assert(d2seg_rt::kConvRows == {CONV_ROWS}, "regenerate: runtime panel height changed");
static_assert(d2seg_rt::kColBlock == {COL_BLOCK}, "regenerate: runtime column block changed");
{int8_guard}
namespace {{

// Every constant of the model, 16-byte aligned per array ({len(program.blob.data)} bytes).
alignas(16) static const unsigned char kBlob[{len(program.blob.data) + 1}] =
{program.blob.literal()};

// One arena for every intermediate tensor, planned at generation time.
alignas(16) static unsigned char g_arena[{max(plan.size, 16)}];

{offsets}

template <typename T>
const T* blob(long offset) {{ return reinterpret_cast<const T*>(kBlob + offset); }}

template <typename T>
T* arena(long offset) {{ return reinterpret_cast<T*>(g_arena + offset); }}

}}  // namespace

extern "C" int {name}_run(const float* input, float* output) {{
  using namespace d2seg_rt;
{body}
  return 0;
}}
"""
    return GeneratedModel(header, source, plan, len(program.blob.data), program.macs)
