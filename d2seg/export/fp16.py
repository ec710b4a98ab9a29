"""fp16 ONNX graphs with float32 inputs and outputs (onnxruntime's float16 converter).

Two modes:

* whole graph (semantic models): every op in fp16 except onnxruntime's default blocked ops and
  Resize, whose scales stay exact;
* one part (detection models, ``fp16_prefix``): only the nodes whose names start with the
  prefix (the trunk, where nearly all the compute is) become fp16, cast back to fp32 where the
  rest reads them; box decoding, NMS, RoIAlign and mask selection stay entirely fp32. The
  converter cannot take torchvision's detection post-processing itself: it types the If
  subgraph of batched NMS as fp16 while keeping NMS fp32, which onnxruntime refuses to load.
"""

import os
from pathlib import Path
from typing import Iterable, Iterator

import onnx
from onnx import GraphProto, ModelProto, NodeProto
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from d2seg.errors import ConfigError
from d2seg.utils.io import atomic_open

# Kept in fp32 in whole-graph mode: Resize's scales must stay exact for the C++ lowering.
FP16_KEEP_FP32_OPS = ("Resize",)


def _subgraphs(node: NodeProto) -> Iterator[GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        yield from attribute.graphs


def _read_names(nodes: Iterable[NodeProto]) -> set[str]:
    """Tensor names the nodes read, including those their subgraphs read from outer scopes."""
    names: set[str] = set()
    for node in nodes:
        names.update(node.input)
        for graph in _subgraphs(node):
            names.update(_read_names(graph.node))
    return names


def _sort_topologically(graph: GraphProto) -> None:
    """Reorder ``graph``'s nodes so each comes after the producers of what it reads (ONNX
    requires it; the converter appends its Cast nodes at the end)."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    ordered, done = [], set()
    for start in range(len(nodes)):
        stack = [(start, False)]  # (node, its producers already pushed)
        while stack:
            index, expanded = stack.pop()
            if index in done:
                continue
            if expanded:
                done.add(index)
                ordered.append(nodes[index])
                continue
            stack.append((index, True))
            for name in _read_names([nodes[index]]):
                if name in producer and producer[name] not in done:
                    stack.append((producer[name], False))
    del graph.node[:]
    graph.node.extend(ordered)


def _bypass_weight_identities(graph: GraphProto) -> None:
    """Make nodes read initializers directly instead of through ``Identity`` (the exporter's
    way to share one weight), so that weights do not enter the fp16 part as fp32 inputs."""
    initializers = {init.name for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs
    }
    nodes = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in nodes:
        node.input[:] = [alias.get(name, name) for name in node.input]
    del graph.node[:]
    graph.node.extend(nodes)


def _convert_part(model: ModelProto, prefix: str, op_block_list: list[str]) -> ModelProto:
    """``model`` with only the nodes named ``prefix...`` converted to fp16."""
    graph = model.graph
    _bypass_weight_identities(graph)
    inner = [n for n in graph.node if n.name.startswith(prefix)]
    if not inner:
        raise ConfigError(f"no ONNX node is named {prefix}...; fix: pass the trunk's node prefix")
    outer = [n for n in graph.node if not n.name.startswith(prefix)]
    outer_reads = _read_names(outer)
    initializers = {init.name for init in graph.initializer}
    produced = {o for n in inner for o in n.output}
    part_inputs = sorted(_read_names(inner) - produced - initializers - {""})
    part_outputs = sorted(produced & (outer_reads | {o.name for o in graph.output}))
    part = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model)).extract_model(
        part_inputs, part_outputs
    )
    part = convert_float_to_float16(part, keep_io_types=True, op_block_list=op_block_list)
    kept = [i for i in graph.initializer if i.name in outer_reads]
    # A weight both parts read: the rest keeps the fp32 original, the part its fp16 copy.
    part_initializers = []
    for init in part.graph.initializer:
        if init.name in outer_reads and init.data_type == onnx.TensorProto.FLOAT16:
            for node in part.graph.node:
                node.input[:] = [f"{i}_fp16" if i == init.name else i for i in node.input]
            init.name = f"{init.name}_fp16"
        if init.name not in outer_reads:
            part_initializers.append(init)
    del graph.node[:]
    graph.node.extend(outer + list(part.graph.node))
    del graph.initializer[:]
    graph.initializer.extend(kept + part_initializers)
    del graph.value_info[:]
    return model


def convert_to_fp16(
    src: str | os.PathLike, dst: str | os.PathLike, *, fp16_prefix: str | None = None
) -> Path:
    """Write an fp16 version of the ONNX graph ``src`` to ``dst`` (float32 inputs/outputs).

    ``fp16_prefix=None``: the whole graph, Resize and onnxruntime's default blocked ops kept
    fp32. Otherwise only nodes whose names start with ``fp16_prefix`` (e.g. the exported
    trunk, ``"/backbone/"``). Returns ``dst``.
    """
    model = onnx.load(str(src))
    op_block_list = list(DEFAULT_OP_BLOCK_LIST) + list(FP16_KEEP_FP32_OPS)
    if fp16_prefix is not None:
        converted = _convert_part(model, fp16_prefix, op_block_list)
    elif any(True for node in model.graph.node for _ in _subgraphs(node)):
        raise ConfigError(
            f"{src} has control-flow subgraphs (e.g. a detection model's batched NMS), which "
            f"onnxruntime's fp16 converter mistypes; fix: convert only the trunk (fp16_prefix)"
        )
    else:
        converted = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=op_block_list
        )
    _sort_topologically(converted.graph)
    onnx.checker.check_model(converted)
    dst = Path(dst)
    with atomic_open(dst, "wb") as f:
        f.write(converted.SerializeToString())
    return dst
