"""Calibration and evaluation on a labelled set: ``remotecase verifier eval DIR``.

``DIR`` holds images and ``pairs.csv`` (``image_a,image_b,label``, label ``same`` or
``different``). Every image is embedded once (the largest face when there are several); a pair
whose image has no face scores nothing, which counts as a rejection, never as a match.

The separation of the two score distributions is reported as d' (the difference of their means
over the root mean of their variances): it compares engines and preprocessing on a set too small
for its error rates to say much.

A false-accept rate is only stated when the set has enough different-person pairs behind it:
at least 3/FAR (the rule of three), so 300 for 1% and 3,000 for 0.1%.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .engine import Engine, cosine


class EvalError(Exception):
    pass


@dataclass
class Pair:
    a: str
    b: str
    same: bool


def read_pairs(directory: Path) -> list[Pair]:
    path = directory / "pairs.csv"
    if not path.is_file():
        raise EvalError(f"{path} not found")
    pairs = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"image_a", "image_b", "label"} <= set(
            reader.fieldnames
        ):
            raise EvalError("pairs.csv needs the columns image_a,image_b,label")
        for n, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip().lower()
            if label not in ("same", "different"):
                raise EvalError(f"pairs.csv line {n}: label must be same or different")
            for key in ("image_a", "image_b"):
                if not (directory / row[key]).is_file():
                    raise EvalError(f"pairs.csv line {n}: {row[key]} not found")
            pairs.append(Pair(row["image_a"], row["image_b"], label == "same"))
    if not pairs:
        raise EvalError("pairs.csv has no pairs")
    return pairs


def dataset_hash(directory: Path, pairs: list[Pair]) -> str:
    digest = hashlib.sha256((directory / "pairs.csv").read_bytes())
    for name in sorted({p.a for p in pairs} | {p.b for p in pairs}):
        digest.update(
            name.encode() + b"\0" + hashlib.sha256((directory / name).read_bytes()).digest()
        )
    return digest.hexdigest()


def _far_threshold(different: np.ndarray, far: float) -> float:
    """The lowest threshold at which at most ``far`` of different-person pairs match."""
    if not len(different):
        return 1.0
    allowed = int(np.floor(far * len(different)))
    ranked = np.sort(different)[::-1]
    if allowed >= len(ranked):
        return float(ranked[-1])
    return float(np.nextafter(ranked[allowed], np.inf))


def evaluate(
    directory: Path, engine: Engine, *, threshold: float, target_far: float = 0.01
) -> dict[str, Any]:
    pairs = read_pairs(directory)
    embeddings: dict[str, np.ndarray | None] = {}
    failures: list[str] = []
    started = time.perf_counter()
    for name in sorted({p.a for p in pairs} | {p.b for p in pairs}):
        image = cv2.imread(str(directory / name))
        if image is None:
            raise EvalError(f"{name} is not an image")
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        faces = engine.faces(rgb, min_face=20)
        if not faces:
            embeddings[name] = None
            failures.append(name)
            continue
        largest = max(faces, key=lambda f: f.quality["size"])
        embeddings[name] = engine.embed(rgb, largest)
    ms_per_image = 1000 * (time.perf_counter() - started) / max(1, len(embeddings))
    scores: list[tuple[float | None, bool]] = []
    for p in pairs:
        ea, eb = embeddings[p.a], embeddings[p.b]
        scores.append((cosine(ea, eb) if ea is not None and eb is not None else None, p.same))
    same = np.array([s for s, same_ in scores if same_ and s is not None])
    different = np.array([s for s, same_ in scores if not same_ and s is not None])
    n_same = sum(1 for _, s in scores if s)
    n_diff = len(scores) - n_same

    def accuracy_at(t: float) -> float:
        right = sum(1 for s, same_ in scores if (s is not None and s >= t) == same_)
        return right / len(scores)

    candidates = sorted({float(s) for s, _ in scores if s is not None} | {threshold})
    mids = [(a + b) / 2 for a, b in itertools.pairwise(candidates)] or candidates
    best = max(mids, key=lambda t: (accuracy_at(t), -abs(t - threshold)))

    def tar_at(far: float) -> dict[str, Any]:
        needed = int(np.ceil(3 / far))
        t = _far_threshold(different, far)
        tar = float((same >= t).sum() / n_same) if n_same else None
        return {
            "far": far,
            "threshold": round(t, 4),
            "tar": None if tar is None else round(tar, 4),
            "supported": n_diff >= needed,
            "note": ""
            if n_diff >= needed
            else f"{n_diff} different-person pairs cannot support FAR {far:g}; at least {needed}",
        }

    return {
        "d_prime": d_prime(same, different),
        "histogram": histogram(same, different),
        "pairs": len(pairs),
        "same_pairs": n_same,
        "different_pairs": n_diff,
        "images": len(embeddings),
        "detect_failures": len(failures),
        "failed_images": failures,
        "ms_per_image": round(ms_per_image, 1),
        "threshold": threshold,
        "accuracy": round(accuracy_at(threshold), 4),
        "best_threshold": round(best, 4),
        "best_accuracy": round(accuracy_at(best), 4),
        "tar_at_far": [tar_at(0.01), tar_at(0.001)],
        "threshold_for_target_far": {
            "far": target_far,
            "threshold": round(_far_threshold(different, target_far), 4),
            **(
                {}
                if n_diff >= np.ceil(3 / target_far)
                else {"note": "not enough different-person pairs"}
            ),
        },
        "same_scores": _spread(same),
        "different_scores": _spread(different),
        "dataset_sha256": dataset_hash(directory, pairs),
        "engine": engine.spec.identity(),
        "_scores": scores,
    }


def _r(value: float) -> float:
    return round(float(value), 4)


def _spread(scores: np.ndarray) -> dict[str, float | None]:
    if not len(scores):
        return {"min": None, "max": None, "mean": None, "sd": None}
    return {
        "min": _r(scores.min()),
        "max": _r(scores.max()),
        "mean": _r(scores.mean()),
        "sd": _r(scores.std()),
    }


def d_prime(same: np.ndarray, different: np.ndarray) -> float | None:
    """(mean same - mean different) / sqrt((var same + var different) / 2)."""
    if len(same) < 2 or len(different) < 2:
        return None
    spread = float(np.sqrt((same.var() + different.var()) / 2))
    return round(float(same.mean() - different.mean()) / spread, 2) if spread > 0 else None


HISTOGRAM_BINS = [round(-0.2 + 0.1 * i, 1) for i in range(13)]  # -0.2, -0.1, ..., 1.0


def histogram(same: np.ndarray, different: np.ndarray) -> dict[str, list[Any]]:
    """Pairs per cosine bin of 0.1 from -0.2 to 1.0 (scores outside go to the end bins)."""
    edges = np.array(HISTOGRAM_BINS, dtype=np.float64)

    def counts(scores: np.ndarray) -> list[int]:
        clipped = np.clip(scores, edges[0], edges[-1] - 1e-9)
        return [int(c) for c in np.histogram(clipped, edges)[0]]

    return {"from": HISTOGRAM_BINS[:-1], "same": counts(same), "different": counts(different)}


def plot(report: dict[str, Any], path: Path) -> None:
    """Score distributions and ROC as a PNG, drawn with OpenCV (no plotting library)."""
    width, height = 1000, 420
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    scores = report["_scores"]
    same = [s for s, same_ in scores if same_ and s is not None]
    different = [s for s, same_ in scores if not same_ and s is not None]
    # left: histograms over cosine -0.2..1.0
    left, top, w, h = 50, 40, 420, 320
    cv2.rectangle(canvas, (left, top), (left + w, top + h), (0, 0, 0), 1)
    bins = np.linspace(-0.2, 1.0, 41)
    hs, _ = np.histogram(same, bins)
    hd, _ = np.histogram(different, bins)
    peak = max(1, int(hs.max(initial=0)), int(hd.max(initial=0)))
    bw = w / (len(bins) - 1)
    for i in range(len(bins) - 1):
        x = int(left + i * bw)
        for counts, color in ((hd, (60, 60, 220)), (hs, (60, 160, 60))):
            bar = int(h * counts[i] / peak)
            cv2.rectangle(
                canvas,
                (x + 1, top + h - bar),
                (int(x + bw) - 1, top + h),
                color,
                1 if color[0] == 60 and color[1] == 160 else -1,
            )
    tx = int(left + (report["threshold"] + 0.2) / 1.2 * w)
    cv2.line(canvas, (tx, top), (tx, top + h), (0, 0, 0), 1)
    cv2.putText(
        canvas,
        "scores: same (green outline) / different (red)",
        (left, 28),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
    )
    cv2.putText(
        canvas,
        f"threshold {report['threshold']:.2f}",
        (tx + 4, top + 14),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
    )
    # right: ROC (FAR on x, TAR on y)
    left2 = 540
    cv2.rectangle(canvas, (left2, top), (left2 + w, top + h), (0, 0, 0), 1)
    points = []
    for t in np.linspace(-1, 1, 401):
        far = float(np.mean(np.array(different) >= t)) if different else 0.0
        tar = float(np.mean(np.array(same) >= t)) if same else 0.0
        points.append((int(left2 + far * w), int(top + h - tar * h)))
    cv2.polylines(canvas, [np.array(points, dtype=np.int32)], False, (200, 80, 0), 2)
    cv2.putText(
        canvas,
        f"ROC: TAR against FAR ({report['pairs']} pairs)",
        (left2, 28),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
    )
    cv2.putText(
        canvas,
        f"accuracy {report['accuracy']:.3f} at {report['threshold']:.2f}",
        (left2 + 10, top + h - 10),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (0, 0, 0),
        1,
    )
    if not cv2.imwrite(str(path), canvas):
        raise EvalError(f"cannot write {path}")
