"""Model packs in insightface's layout (buffalo_l, buffalo_sc, or any pack laid out the same),
run with onnxruntime from a directory the operator provides.

Nothing is downloaded. Every file of the pack is pinned by SHA-256 in configuration and
checked before any is loaded (insightface itself checks nothing). Models are routed by their
shapes, as insightface does: the detector (SCRFD) takes a 3-channel image of any size and
gives scores, box distances and five landmarks per anchor at strides 8, 16 and 32; the
recognizer (ArcFace) takes a 112x112 aligned face and gives one embedding. Other models in the
pack (age, landmarks) are hashed and left unused.

insightface's own pretrained packs are licensed for non-commercial research only: a police
deployment needs a commercially licensed pack; the licence text configured for the pack is
logged at start and every verdict names the pack by its files' hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from .align import align
from .engine import EngineSpec, Face, ModelError, check_files, measure, plausible
from .mtcnn import Detection, _nms

STRIDES = (8, 16, 32)


def _dims(shape: list[object]) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in shape]


def route(path: Path) -> str:
    """``detector``, ``recognizer`` or ``other``, from the model's input and outputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        return "other"
    shape = _dims(inputs[0].shape)
    if len(shape) != 4 or shape[1] != 3:
        return "other"
    if shape[2] == 112 and shape[3] == 112 and len(outputs) == 1:
        return "recognizer"
    if len(outputs) in (6, 9) and (shape[2] is None or shape[2] >= 128):
        return "detector"
    return "other"


@dataclass
class InsightFacePack:
    spec: EngineSpec
    det_size: int = 640
    det_threshold: float = 0.5
    _det: ort.InferenceSession = field(init=False)
    _rec: ort.InferenceSession = field(init=False)

    def __post_init__(self) -> None:
        check_files(self.spec)  # before anything is parsed
        roles: dict[str, list[Path]] = {"detector": [], "recognizer": [], "other": []}
        for path in self.spec.files.values():
            roles[route(Path(path))].append(Path(path))
        if len(roles["detector"]) != 1 or len(roles["recognizer"]) != 1:
            raise ModelError(
                f"{self.spec.name}: a pack needs exactly one detector and one recognizer; "
                f"found {[p.name for p in roles['detector']]} and "
                f"{[p.name for p in roles['recognizer']]}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._det = ort.InferenceSession(
            str(roles["detector"][0]), options, providers=["CPUExecutionProvider"]
        )
        self._rec = ort.InferenceSession(
            str(roles["recognizer"][0]), options, providers=["CPUExecutionProvider"]
        )
        self.detector_file = roles["detector"][0].name
        self.recognizer_file = roles["recognizer"][0].name

    # -- SCRFD -----------------------------------------------------------------------------
    def _detect(self, rgb: np.ndarray) -> list[Detection]:
        size = self.det_size
        scale = size / max(rgb.shape[0], rgb.shape[1])
        h, w = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
        canvas = np.zeros((size, size, 3), dtype=np.float32)
        canvas[:h, :w] = cv2.resize(rgb, (w, h))
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self._det.run(None, {self._det.get_inputs()[0].name: blob})
        groups = len(STRIDES)
        with_kps = len(outputs) == 3 * groups
        found = []
        for i, stride in enumerate(STRIDES):
            scores = outputs[i].reshape(-1)
            boxes = outputs[i + groups].reshape(-1, 4) * stride
            side = size // stride
            anchors = len(scores) // (side * side) if side else 0
            if anchors == 0:
                continue
            ys, xs = np.mgrid[:side, :side]
            centers = np.repeat(np.stack([xs, ys], -1).reshape(-1, 2) * stride, anchors, axis=0)
            keep = np.where(scores >= self.det_threshold)[0]
            if not len(keep):
                continue
            c = centers[keep].astype(np.float32)
            b = boxes[keep]
            decoded = np.column_stack(
                [
                    c[:, 0] - b[:, 0],
                    c[:, 1] - b[:, 1],
                    c[:, 0] + b[:, 2],
                    c[:, 1] + b[:, 3],
                    scores[keep],
                ]
            )
            if with_kps:
                k = outputs[i + 2 * groups].reshape(-1, 10)[keep] * stride
                points = k.reshape(-1, 5, 2) + c[:, None, :]
            else:
                points = np.zeros((len(keep), 5, 2), dtype=np.float32)
            found.append((decoded, points))
        if not found:
            return []
        boxes_all = np.vstack([f[0] for f in found])
        points_all = np.vstack([f[1] for f in found])
        picked = _nms(boxes_all, 0.4)
        return [
            Detection(
                tuple(float(v) / scale for v in boxes_all[i, :4]),  # type: ignore[arg-type]
                float(boxes_all[i, 4]),
                points_all[i] / scale,
            )
            for i in picked
        ]

    def faces(self, rgb: np.ndarray, min_face: int | None = None) -> list[Face]:
        # SCRFD's scores are its own (its threshold applies in _detect); the landmark
        # geometry is the engines' common rule
        return [measure(rgb, d) for d in self._detect(rgb) if plausible(d)]

    # -- ArcFace ---------------------------------------------------------------------------
    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        crop = align(rgb, face.detection.landmarks, 112).astype(np.float32)
        blob = ((crop - 127.5) / 127.5).transpose(2, 0, 1)[None]
        vector = self._rec.run(None, {self._rec.get_inputs()[0].name: blob})[0].reshape(-1)
        norm = float(np.linalg.norm(vector))
        return (vector / norm if norm > 0 else vector).astype(np.float64)


def pack_spec(
    name: str,
    directory: Path,
    sha256: dict[str, str],
    *,
    threshold: float,
    calibrated_on: str = "",
    licence: str = "",
) -> EngineSpec:
    """A spec for every ``*.onnx`` in ``directory``; each must be pinned in ``sha256``."""
    files = {p.name: str(p) for p in sorted(directory.glob("*.onnx"))}
    if not files:
        raise ModelError(f"{name}: no .onnx files in {directory}")
    unpinned = sorted(set(files) - set(sha256))
    if unpinned:
        raise ModelError(f"{name}: no pinned SHA-256 for {', '.join(unpinned)}")
    return EngineSpec(
        name=name,
        files=files,
        sha256=dict(sha256),
        threshold=threshold,
        calibrated_on=calibrated_on,
        licence=licence,
    )
