"""What counts as a face, and the states a picture too poor to judge leads to.

A cat (``skimage.data.chelsea()``) must not count as a face; a face too small or too blurred
to judge gives ``low_quality`` with its reason, never a ``no_face`` or ``different_face`` alert,
and an alert is not cleared by a worse picture. The call-level tests are in test_verifier.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.peer import ImageVideoTrack
from tests.test_verifier import ASTRONAUT, CAT, HANKS, _read
from verifier.engine import MIN_FACE_SCORE, counts, default_spec, load_engine, plausible
from verifier.mtcnn import Detection, Mtcnn
from verifier.service import LOW_QUALITY, Verdict, Verifier, VerifierSettings, Watch


def _rotated(rgb: np.ndarray, degrees: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def _cat_pictures() -> Iterator[np.ndarray]:
    """The cat as a camera would show it, and turned and scaled the ways that make MTCNN
    propose a face on it."""
    for width, height in ((640, 480), (320, 240)):
        track = ImageVideoTrack([(0, CAT)], width=width, height=height)
        for t in np.arange(0, 7, 0.7):
            yield track._render(float(t))
    for degrees in (-25, 25):
        for scale in (0.35, 1.0):
            yield cv2.resize(_rotated(CAT, degrees), None, fx=scale, fy=scale)


def test_a_cat_does_not_count_as_a_face() -> None:
    spec = default_spec()
    engine = load_engine(spec)
    # the detector's cascade alone, with a permissive last stage: what it proposes on the cat
    permissive = Mtcnn(Path(spec.files["pnet"]).parent, min_face=20, thresholds=(0.6, 0.7, 0.2))
    proposed: list[Detection] = []
    for picture in _cat_pictures():
        proposed += permissive.detect(picture)
        assert engine.faces(picture, min_face=20) == []
    assert len(proposed) >= 3, "the cat gives the detector something to reject"
    assert not any(counts(d) for d in proposed)
    assert max(d.score for d in proposed) < MIN_FACE_SCORE
    # while every real face counts: frontal, turned, tilted, small, in a group
    real = {
        "astronaut": ASTRONAUT,
        "hanks": HANKS,
        "tilted": _rotated(ASTRONAUT, 30),
        "tilted back": _rotated(ASTRONAUT, -30),
        "group": _read("t1.jpg"),
        "small": ImageVideoTrack([(0, ASTRONAUT)], width=320, height=240)._render(1.0),
    }
    for name, picture in real.items():
        found = permissive.detect(picture)
        faces = engine.faces(picture, min_face=20)
        assert faces, name
        assert len(faces) == (6 if name == "group" else 1), name
        assert all(counts(f.detection) for f in faces)
        assert sum(counts(d) for d in found) == len(faces), name


def test_landmarks_must_sit_where_a_face_has_them() -> None:
    engine = load_engine(default_spec())
    face = engine.faces(ASTRONAUT)[0].detection
    assert plausible(face)
    points = face.landmarks
    x1, y1, x2, y2 = face.box
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])

    def moved(landmarks: np.ndarray) -> Detection:
        return replace(face, landmarks=np.asarray(landmarks, dtype=np.float64))

    def turned(degrees: float) -> np.ndarray:
        a = np.radians(degrees)
        rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return (points - centre) @ rotation.T + centre

    assert plausible(moved(turned(30))) and plausible(moved(turned(-30)))
    step = np.array([1.0, 0.0])
    wrong = {
        "upside down": turned(180),
        "on its side": turned(90),
        "mouth above the nose": np.vstack(
            [points[:3], points[3:] - [0, points[3:, 1].mean() - points[2, 1] + 3]]
        ),
        "nose above the eyes": np.vstack(
            [points[:2], [points[2, 0], points[0, 1] - 10], points[3:]]
        ),
        "eyes a dot in a big box": np.vstack([centre - step, centre + step, points[2:]]),
        "all in one point": np.tile(centre, (5, 1)),
        "not numbers": np.full((5, 2), np.nan),
    }
    for name, landmarks in wrong.items():
        assert not plausible(moved(landmarks)), name
    assert not counts(replace(face, score=0.8))


def _verdict(kind: str, at: float, reason: str = "") -> Verdict:
    score = {"match": 0.9, "no_match": 0.1}.get(kind)
    return Verdict(
        "party-1", kind, score, 0 if kind == "no_face" else 1, None, "0" * 64, at, reason=reason
    )


@pytest.fixture
def verifier() -> Iterator[Verifier]:
    settings = VerifierSettings(alert_after=3.0, no_face_after=10.0)
    made = Verifier(default_spec(), settings, store=None)  # type: ignore[arg-type]
    yield made
    made._pool.shutdown()


def _run(
    verifier: Verifier,
    kinds: Sequence[str | tuple[str, str]],
    state: str = "verifying",
    reason: str = "",
) -> list[tuple[str, str]]:
    """The states after each verdict, one a second."""
    watch = Watch(
        None,  # type: ignore[arg-type]
        "party-1",
        "track",
        np.zeros(512),
        None,  # type: ignore[arg-type]
        state=state,
        reason=reason,
    )
    states = []
    for second, kind in enumerate(kinds):
        name, why = (kind, "") if isinstance(kind, str) else kind
        verdict = _verdict(name, float(second), why)
        watch.recent.append(verdict)
        if name == "match":
            watch.last_match = verdict.time
        if name != "no_face":
            watch.last_face = verdict.time
        watch.state, watch.reason = verifier._next_state(watch, verdict)
        states.append((watch.state, watch.reason))
    return states


def test_a_picture_too_poor_to_judge_is_said_so_and_never_alerts(verifier: Verifier) -> None:
    small = ("low_quality", "too_small")
    blurred = ("low_quality", "too_blurred")
    # a picture too small for a minute: low quality with its reason, never an alert
    states = _run(verifier, [small] * 60)
    assert states[0] == ("verifying", "") and set(states[1:]) == {("low_quality", "too_small")}
    # the reason follows the picture; good pictures verify again
    states = _run(verifier, [small, small, blurred, "match", "match", "match"])
    assert states[2] == ("low_quality", "too_blurred") and states[-1] == ("verified", "matches")
    # a verified party whose picture shrinks: the check can no longer vouch for her
    states = _run(verifier, ["match", "match", small, small])
    assert states[1] == ("verified", "matches") and states[-1] == ("low_quality", "too_small")
    # one mismatch among pictures too poor to judge is no evidence of another face
    states = _run(verifier, ["no_match"] + [small] * 20)
    assert all(s[0] != "alert" for s in states)
    # but a face that does not match for alert_after still alerts, and a worse picture does
    # not clear that alert
    states = _run(verifier, ["no_match"] * 4 + [small] * 20 + ["match", "match"])
    assert states[3] == ("alert", "different_face")
    assert set(states[4:24]) == {("alert", "different_face")}
    assert states[-1] == ("verified", "matches_again")
    # nobody there at all is still an alert
    states = _run(verifier, ["match", "match"] + ["no_face"] * 12)
    assert states[-1] == ("alert", "no_face")
    assert all(
        LOW_QUALITY[r]["message"].split(" / ")[0] != LOW_QUALITY[r]["message"] for r in LOW_QUALITY
    )


def test_a_small_face_is_found_and_reported_too_small(verifier: Verifier) -> None:
    """At 320x240 the astronaut's face is about 35 px: under the detector's live minimum
    (min_live_face, 60), so it is looked for again at 20 px and reported too small."""

    class Frame:
        def __init__(self, rgb: np.ndarray) -> None:
            self.rgb = rgb

        def to_ndarray(self, format: str) -> np.ndarray:
            assert format == "rgb24"
            return self.rgb

    spec = verifier.spec
    verifier.spec = replace(spec, min_face=60)
    reference = verifier._engine().embed(ASTRONAUT, verifier._engine().faces(ASTRONAUT)[0])
    small = ImageVideoTrack([(0, ASTRONAUT)], width=320, height=240)._render(1.0)
    verdict = verifier._sample("party-1", reference, Frame(small), 0.0)
    assert (verdict.verdict, verdict.reason) == ("low_quality", "too_small")
    assert verdict.quality is not None and 25 < verdict.quality["size"] < 60
    assert verdict.quality["interocular"] > 10
    # a tiny picture with nothing found in it cannot show a face big enough either
    tiny = cv2.resize(small, (160, 120), interpolation=cv2.INTER_AREA)
    tiny[:] = 110
    verdict = verifier._sample("party-1", reference, Frame(tiny), 0.0)
    assert (verdict.verdict, verdict.reason) == ("low_quality", "too_small")
    # a real picture with nobody in it is no face
    empty = np.full((480, 640, 3), 110, np.uint8)
    assert verifier._sample("party-1", reference, Frame(empty), 0.0).verdict == "no_face"
    # blurred past recognition, on a noisy stream: too blurred, not a mismatch
    blurred = ImageVideoTrack([(0, cv2.GaussianBlur(ASTRONAUT, (0, 0), 5))])._render(1.0)
    verdict = verifier._sample("party-1", reference, Frame(blurred), 0.0)
    assert (verdict.verdict, verdict.reason) == ("low_quality", "too_blurred")
    sharp = ImageVideoTrack([(0, ASTRONAUT)])._render(1.0)
    assert verifier._sample("party-1", reference, Frame(sharp), 0.0).verdict == "match"
