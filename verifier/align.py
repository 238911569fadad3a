"""Five-point face alignment: a similarity transform onto a fixed landmark template.

The template is the one ArcFace-style recognizers use for 112x112 crops (eyes, nose tip, mouth
corners), scaled to the crop size the embedding network wants. The transform is the
least-squares similarity (Umeyama 1991) from the detected landmarks to the template.
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the similarity transform that best maps ``src`` points onto ``dst``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rotation = u @ np.diag(d) @ vt
    variance = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / variance if variance > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align(
    rgb: np.ndarray, landmarks: np.ndarray, size: int = 112, margin: float = 0.0, lift: float = 0.0
) -> np.ndarray:
    """The face warped so its landmarks sit on the template, ``size`` x ``size`` pixels.

    ``margin`` widens the crop around the template (as a fraction of the size), and ``lift``
    moves the face up in it (a fraction of the size), for networks trained on other crops.
    """
    template = TEMPLATE_112 / 112.0
    template = (template - 0.5) / (1 + margin) + 0.5 - np.array([0.0, lift])
    matrix = similarity(landmarks, template * size)
    return cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
