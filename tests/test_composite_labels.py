"""The export's composite names each participant in Chinese (王伟), with a real CJK font.

A real call is recorded (a party named 王伟 by its token, VP8 and Opus over loopback), sealed
and exported twice: once with Debian's fonts-wqy-zenhei (found in the standard path), once with
a font path that does not exist. Each composite is decoded and its label box compared with the
two renderings of the name: the TrueType one (王伟's strokes) and the bitmap fallback's (``??``).
The first export must match the strokes and not the question marks, the second the other way
round, and only the second's report says that the font was missing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import RECORDER
from recorder.custody import CustodyLog
from recorder.export import HEADER_H, TILE_H, _clock_label, export_recording
from recorder.keys import KeyEncryptionKey, load_or_create_signing_key
from recorder.labels import CANDIDATES, PAD, LabelPainter, find_label_font
from recorder.witness import KeyWitness
from tests.conftest import make_config, start_server, wait_until

NAME = "王伟"
ROOM = "labels-room"

pytestmark = pytest.mark.skipif(
    find_label_font() is None, reason=f"no CJK font in {[p for p, _ in CANDIDATES]}"
)


async def record_named_party(base: Path) -> Path:
    """One party, named 王伟, in a real recorded call; the sealed recording's directory."""
    server = await start_server(make_config(base, recording={"segment_seconds": 1.0}))
    party = PeerClient(server.base_url, server.token(ROOM, "party-1", name=NAME))
    try:
        await party.connect()
        await party.publish(PatternVideoTrack(fps=15), ToneAudioTrack(440), video_codec="video/VP8")
        room = server.sfu.rooms[ROOM]
        await wait_until(lambda: len(room.up_tracks()) == 2, what="two tracks published")
        recorder = server.app[RECORDER]
        recording = await recorder.start(room, actor="officer", reason="inquiry", case="CASE-15")
        await asyncio.sleep(2.0)
        await recorder.stop(ROOM, actor="officer", reason="inquiry finished")
        return Path(recording.directory)
    finally:
        await party.close()
        await server.runner.cleanup()


def export(base: Path, recording: Path, out: Path, label_font: Path | None) -> None:
    keys = base / "keys"
    signing_key = load_or_create_signing_key(keys / "custody-ed25519.pem")
    custody = CustodyLog(
        base / "var" / "custody",
        signing_key,
        witness=KeyWitness(base / "witness", base / "checkpoints"),
    )
    try:
        export_recording(
            recording_dir=recording,
            custody=custody,
            kek=KeyEncryptionKey.load_or_create(keys / "recording-kek.key"),
            signing_key=signing_key,
            out=out,
            actor="supervisor",
            reason="court request",
            label_font=label_font,
        )
    finally:
        custody.close()


def middle_frame(composite: Path) -> np.ndarray:
    with av.open(str(composite)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) > 10
    return frames[len(frames) // 2]


def placed(frame: np.ndarray, painter: LabelPainter, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Where ``painter`` puts the first tile's label ``text`` in a frame: its words' pixels, and
    its box (darkened under the words)."""
    stamp = painter.stamp(text)
    words, box = np.zeros(frame.shape[:2], dtype=bool), np.zeros(frame.shape[:2], dtype=bool)
    y = HEADER_H + TILE_H - stamp.height - 6
    words[y : y + stamp.height, 8 : 8 + stamp.width] = stamp.mask > 128
    box[y : y + stamp.height, 8 : 8 + stamp.width] = True
    return words, box


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("labels")
    recording = asyncio.run(record_named_party(base))
    with_font, without = base / "with-font", base / "without-font"
    export(base, recording, with_font, None)
    export(base, recording, without, base / "no-such-font.ttc")
    return recording, with_font, without


def test_the_composite_names_the_party_in_chinese(exports: tuple[Path, Path, Path]) -> None:
    recording, with_font, without = exports
    manifest = json.loads((recording / "manifest.json").read_bytes())
    assert [p["name"] for p in manifest["participants"]] == [NAME]

    cjk, bitmap = LabelPainter(), LabelPainter(Path("/no/such/font.ttc"))
    assert cjk.font is not None and bitmap.font is None
    good, fallback = (
        middle_frame(with_font / "composite.mp4"),
        middle_frame(without / "composite.mp4"),
    )
    # the words are white on a box darkened to a third: in the box, the bright pixels are the
    # words; they must be the expected rendering's, and not the other's
    for frame, expected, other in ((good, cjk, bitmap), (fallback, bitmap, cjk)):
        drawn, box = placed(frame, expected, NAME)
        wrong, _ = placed(frame, other, NAME)
        lit = (frame.mean(axis=2) > 170) & box
        assert lit.sum() > 40, "no label drawn"
        assert overlap(lit, drawn) > 0.5, (overlap(lit, drawn), overlap(lit, wrong))
        assert overlap(lit, wrong) < 0.25, (overlap(lit, drawn), overlap(lit, wrong))
    # and the two renderings really differ: 王伟's strokes are not two question marks
    assert overlap(placed(good, cjk, NAME)[0], placed(good, bitmap, NAME)[0]) < 0.25
    # the clock above the tiles: Beijing time, said in Chinese, then UTC (any moment: the
    # digits are as wide as each other, so "北京时间" is always in the same place)
    label = _clock_label(0.0)
    zone = label.index("北京时间")
    # where the words "北京时间" start, less the margin of their own stamp
    x = 8 + cjk.clock_stamp(label[:zone]).width - 2 * PAD
    y = max(0, (HEADER_H - cjk.height) // 2)
    words = cjk.clock_stamp("北京时间")
    strokes = np.zeros(good.shape[:2], dtype=bool)
    strokes[y : y + words.height, x : x + words.width] = words.mask > 128
    box = np.zeros(good.shape[:2], dtype=bool)
    box[y : y + words.height, x : x + words.width] = True
    lit = (good.mean(axis=2) > 170) & box
    assert overlap(lit, strokes) > 0.5, overlap(lit, strokes)
    assert label.endswith(" UTC")
    # the frames are kept for review next to the exports
    Image.fromarray(good).save(with_font.parent / "composite-with-font.png")
    Image.fromarray(fallback).save(without.parent / "composite-without-font.png")


def test_the_report_says_once_when_the_font_is_missing(exports: tuple[Path, Path, Path]) -> None:
    _, with_font, without = exports
    good = (with_font / "REPORT.txt").read_text(encoding="utf-8")
    bad = (without / "REPORT.txt").read_text(encoding="utf-8")
    assert "点阵字体" not in good and "bitmap font" not in good
    assert bad.count("注意：配置的合成画面标注字体不存在") == 1
    assert bad.count("Note: the configured label font does not exist") == 1
    assert bad.index("注意：") < bad.index("---- English ----") < bad.index("Note: ")
    package = json.loads((with_font / "package.json").read_bytes())
    found = find_label_font()
    assert found is not None and package["composite"]["label_font"] == found[0].name
    assert "label_note" not in package["composite"]
    assert json.loads((without / "package.json").read_bytes())["composite"]["label_font"] is None


def test_a_long_name_is_shortened_to_its_tile() -> None:
    painter = LabelPainter()
    long_name = "王伟" * 40
    fitted = painter.fit(long_name, 464)
    assert fitted.endswith("…") and long_name.startswith(fitted[:-1])
    assert painter.stamp(fitted).width <= 464 < painter.stamp(long_name).width
    # the clock, put together from its characters, has the height of every other label
    assert painter.clock_stamp("2026-12-01 18:00:00.0 UTC").height == painter.height
