"""FaceNet gets the input it was trained on: fixed standardisation, ``(x - 127.5) / 128``.

The 2018 VGGFace2 model was trained on crops standardized by fixed constants; per-image
whitening ("prewhiten") fed it about twice the contrast and cost separation (docs/verifier.md).
These tests pin the input against the model's behaviour on faces that installed packages ship
(skimage's astronaut, insightface's Tom Hanks and group photo), so that whitening cannot come
back silently: whitening makes the input blind to any change of brightness and contrast, the
fixed constants do not, and the network, trained to tolerate such changes, keeps such
embeddings close.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.test_verifier import ASTRONAUT, HANKS, _read
from verifier.engine import DEFAULT_THRESHOLD, default_spec, load_engine
from verifier.facenet import FaceNet, standardize


def _whiten(crop: np.ndarray) -> np.ndarray:
    """The per-image standardisation the verifier used before (and the wrapper still uses)."""
    x = crop.astype(np.float32)
    return (x - x.mean()) / max(float(x.std()), 1.0 / np.sqrt(x.size))


@pytest.fixture(scope="module")
def facenet() -> tuple[object, FaceNet]:
    engine = load_engine(default_spec())
    return engine, FaceNet(Path(engine.spec.files["facenet"]))


def _crops(engine: object) -> dict[str, np.ndarray]:
    crops = {}
    for name, rgb in (("astronaut", ASTRONAUT), ("hanks", HANKS)):
        faces = engine.faces(rgb)  # type: ignore[attr-defined]
        crops[name] = FaceNet.crop(rgb, faces[0].detection.landmarks)
    group = _read("t1.jpg")
    for i, face in enumerate(engine.faces(group)):  # type: ignore[attr-defined]
        crops[f"group{i}"] = FaceNet.crop(group, face.detection.landmarks)
    assert len(crops) == 8  # six different people in the group photo
    return crops


def _variants(crop: np.ndarray) -> dict[str, np.ndarray]:
    c = crop.astype(np.float32)
    changed = {
        "brighter": c + 40,
        "darker": c - 40,
        "flat": (c - 128) * 0.6 + 128,
        "contrasty": (c - c.mean()) * 1.3 + c.mean(),
        "gamma": 255 * (c / 255) ** 0.7,
    }
    return {k: np.clip(v, 0, 255).round().astype(np.uint8) for k, v in changed.items()}


def test_the_input_is_the_fixed_standardisation(facenet: tuple[object, FaceNet]) -> None:
    engine, net = facenet
    crop = _crops(engine)["astronaut"]
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    x = standardize(crop)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, (crop.astype(np.float32) - 127.5) / 128)
    # black and white map to about -1 and +1 whatever the rest of the picture is
    assert standardize(np.zeros((2, 2, 3), np.uint8)).max() == pytest.approx(-0.99609375)
    assert standardize(np.full((2, 2, 3), 255, np.uint8)).min() == pytest.approx(0.99609375)
    # what embed() feeds the network is exactly that, and the engine embeds what embed() does
    assert float(net.embed(crop) @ net.forward(x)) > 1 - 1e-6
    face = engine.faces(ASTRONAUT)[0]  # type: ignore[attr-defined]
    assert float(engine.embed(ASTRONAUT, face) @ net.embed(crop)) > 1 - 1e-6  # type: ignore[attr-defined]


def test_brightness_and_contrast_change_the_input_and_barely_the_embedding(
    facenet: tuple[object, FaceNet],
) -> None:
    engine, net = facenet
    crop = _crops(engine)["astronaut"]
    original = net.embed(crop)
    for name, changed in _variants(crop).items():
        score = float(original @ net.embed(changed))
        # the model was trained with such changes: the same face stays well above threshold
        assert score > 0.95, (name, score)
    # ... but it does see them. Whitening would hand it the same input for a lower contrast
    # (an affine change of the pixels), so the same embedding: this fails if it comes back.
    flat = _variants(crop)["flat"]
    assert float(original @ net.embed(flat)) < 0.999
    assert float(net.forward(_whiten(crop)) @ net.forward(_whiten(flat))) > 0.9999


def test_fixed_standardisation_separates_people_better_than_whitening(
    facenet: tuple[object, FaceNet],
) -> None:
    """The model's known behaviour: with the input it was trained on, different people are
    further apart (on the development set the mean different-person cosine goes from 0.26 to
    0.14); here 28 pairs of eight different people from the packages' photos."""
    engine, net = facenet
    crops = _crops(engine)

    def different(standardise: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        embeddings = [net.forward(standardise(c)) for c in crops.values()]
        return np.array([float(a @ b) for a, b in itertools.combinations(embeddings, 2)])

    fixed, whitened = different(standardize), different(_whiten)
    assert len(fixed) == 28
    assert fixed.mean() < whitened.mean() - 0.05, (fixed.mean(), whitened.mean())
    assert fixed.max() < DEFAULT_THRESHOLD, fixed.max()
