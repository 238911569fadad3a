"""Packs in insightface's layout: loading, routing by shape, SCRFD decoding, hash pinning.

No real pack can be had here (insightface's are downloaded, and licensed for research only), so
this test builds a tiny pack with the right shapes: a "detector" whose outputs are constants
with one face at a known place, and a "recognizer" that pools the crop into 512 numbers. Their
accuracy means nothing; what is tested is everything around them. Accuracy is tested on the
default engine (test_verifier.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier.engine import ModelError, load_engine
from verifier.insightface_pack import STRIDES, InsightFacePack, pack_spec, route

SIZE = 640


def _detector(path: Path) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """SCRFD-shaped constants: one anchor at stride 16 scores 0.9 with a box and landmarks."""
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    nodes, outputs, values = [], [], {}
    cx, cy = 20 * 16, 15 * 16  # the anchor at column 20, row 15 of the stride-16 grid
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in STRIDES:
            count = (SIZE // stride) ** 2 * 2
            data = np.zeros((count, width), dtype=np.float32)
            if stride == 16:
                index = (15 * (SIZE // 16) + 20) * 2
                if kind == "score":
                    data[index] = 0.9
                elif kind == "bbox":
                    data[index] = [5, 6, 5, 7]  # distances / stride: 80x96 px box
                else:
                    data[index] = [-1.5, -1.5, 1.5, -1.5, 0, 0.5, -1.2, 2.5, 1.2, 2.5]
            name = f"{kind}_{stride}"
            values[name] = data
            nodes.append(
                helper.make_node(
                    "Constant", [], [name], value=numpy_helper.from_array(data, name + "_c")
                )
            )
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [count, width]))
    graph = helper.make_graph(nodes, "scrfd_shaped", [image], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    kps = values["kps_16"][(15 * (SIZE // 16) + 20) * 2].reshape(5, 2) * 16 + [cx, cy]
    return (cx - 80.0, cy - 96.0, cx + 80.0, cy + 112.0), kps


def _recognizer(path: Path) -> None:
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])
    out = helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])
    weights = np.random.default_rng(1).normal(size=(3, 512)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["683"]),
        ],
        "arcface_shaped",
        [image],
        [out],
        [numpy_helper.from_array(weights, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def _pack(directory: Path) -> tuple[dict[str, str], tuple[float, ...], np.ndarray]:
    directory.mkdir(parents=True)
    box, kps = _detector(directory / "det_tiny.onnx")
    _recognizer(directory / "w600k_tiny.onnx")
    pins = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.onnx")}
    return pins, box, kps


def test_pack_is_routed_decoded_and_pinned(tmp_path: Path) -> None:
    pins, box, kps = _pack(tmp_path / "pack")
    assert route(tmp_path / "pack" / "det_tiny.onnx") == "detector"
    assert route(tmp_path / "pack" / "w600k_tiny.onnx") == "recognizer"

    spec = pack_spec("tiny", tmp_path / "pack", pins, threshold=0.4, licence="test only")
    engine = load_engine(spec)
    assert isinstance(engine, InsightFacePack)
    assert (engine.detector_file, engine.recognizer_file) == ("det_tiny.onnx", "w600k_tiny.onnx")

    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    (face,) = engine.faces(rgb)
    assert face.detection.score == pytest.approx(0.9)
    assert np.allclose(face.detection.box, box, atol=1e-3)
    assert np.allclose(face.detection.landmarks, kps, atol=1e-3)
    embedding = engine.embed(rgb, face)
    assert embedding.shape == (512,) and np.linalg.norm(embedding) == pytest.approx(1.0)
    assert spec.identity()["sha256"] == pins

    # a file that is not the pinned one, and a file with no pin, are refused before loading
    with pytest.raises(ModelError, match="refusing to load"):
        load_engine(
            pack_spec(
                "tiny", tmp_path / "pack", dict(pins, **{"det_tiny.onnx": "0" * 64}), threshold=0.4
            )
        )
    (tmp_path / "pack" / "extra.onnx").write_bytes(b"not pinned")
    with pytest.raises(ModelError, match=r"no pinned SHA-256 for extra\.onnx"):
        pack_spec("tiny", tmp_path / "pack", pins, threshold=0.4)


async def test_server_runs_a_pinned_pack_and_refuses_a_tampered_one(tmp_path: Path) -> None:
    pins, _, _ = _pack(tmp_path / "pack")
    pin_table = "{" + ", ".join(f'"{k}" = "{v}"' for k, v in pins.items()) + "}"

    async def serve(pin_text: str) -> tuple[int | None, str]:
        config = tmp_path / "c.toml"
        config.write_text(
            f'[server]\nport = 0\n[storage]\ndata_dir = "{tmp_path / "var"}"\n'
            f'[keys]\ndir = "{tmp_path / "keys"}"\n'
            f'[verifier]\nengine = "pack"\npack_dir = "{tmp_path / "pack"}"\n'
            f'pack_sha256 = {pin_text}\npack_licence = "research only (test)"\n'
            "threshold = 0.4\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control.cli",
            "--config",
            str(config),
            "serve",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ},
        )
        assert proc.stderr is not None
        text = b""
        try:
            async with asyncio.timeout(30):
                while b"licence" not in text and proc.returncode is None:
                    line = await proc.stderr.readline()
                    if not line:
                        break
                    text += line
        except TimeoutError:
            pass
        if proc.returncode is None:
            proc.terminate()
        rest = await proc.stderr.read()
        await proc.wait()
        return proc.returncode, (text + rest).decode()

    code, log = await serve(pin_table)
    assert "licence: research only (test)" in log, log
    assert code == 0
    (tmp_path / "pack" / "w600k_tiny.onnx").write_bytes(
        (tmp_path / "pack" / "w600k_tiny.onnx").read_bytes() + b"\0"
    )
    code, log = await serve(pin_table)
    assert code != 0 and "refusing to load" in log
