"""The words burnt into the export's composite video: each participant's name (Chinese names
such as 王伟 included) and the clock (Beijing time and UTC), drawn with a Chinese TrueType font
through Pillow.

The font is Debian's ``fonts-wqy-zenhei``, found at run time in the standard paths (those
``documents/fonts.py`` looks in, and Noto Sans CJK's; the recorder does not import
``documents``), or the one configured (``recording.label_font``); nothing is downloaded.
Without it the labels fall back to the 5x7 bitmap font of :mod:`recorder.font` (ASCII only:
other characters show as ``?``), and :attr:`LabelPainter.note` says so for the export's report.

Fast: a label is rendered once into a coverage mask (:class:`Stamp`) and pasted into each frame;
the clock, new every frame, is put together from the cached masks of its characters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .font import text_mask

DEBIAN_PACKAGE = "fonts-wqy-zenhei"
# (path, face index in the collection): the first that exists and loads is used
CANDIDATES: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
    ("/usr/local/share/fonts/wqy-zenhei.ttc", 0),
)
FONT_SIZE = 20  # pixels: readable in a 480x360 tile, a name of 15 Chinese characters fits
PAD = 3  # the dark box's margin around the words
BITMAP_SCALE = 2  # the fallback's 5x7 glyphs drawn at 10x14


def find_label_font(configured: Path | None = None) -> tuple[Path, int] | None:
    """The font file and face index for the labels (``configured`` wins when it exists), or
    None when there is none."""
    if configured is not None:
        if not configured.is_file():
            return None
        # a collection the list knows (Noto CJK's Simplified Chinese is its third face, the
        # first being Japanese): its face; any other file: its first
        known = {Path(path).resolve(): index for path, index in CANDIDATES}
        return configured, known.get(configured.resolve(), 0)
    for path, index in CANDIDATES:
        if Path(path).is_file():
            return Path(path), index
    return None


@dataclass(frozen=True)
class Stamp:
    """A label ready to paste: ``mask`` is the words' coverage (0-255), the box is its size."""

    mask: np.ndarray  # uint8, height x width

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    def paste(
        self, image: np.ndarray, x: int, y: int, color: tuple[int, int, int] = (255, 255, 255)
    ) -> None:
        """Draw into an RGB image in place: the picture under the box darkened to a third (so
        the words read on any picture), then the words blended in by their coverage."""
        height, width = image.shape[:2]
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(width, x + self.width), min(height, y + self.height)
        if x1 <= x0 or y1 <= y0:
            return
        region = image[y0:y1, x0:x1]
        alpha = self.mask[y0 - y : y1 - y, x0 - x : x1 - x, None].astype(np.uint16)
        dark = (region // 3).astype(np.uint16)
        ink = np.array(color, dtype=np.uint16)
        region[...] = ((dark * (255 - alpha) + ink * alpha + 127) // 255).astype(np.uint8)


class LabelPainter:
    """Renders labels with the CJK font (or the bitmap fallback), each distinct text once."""

    def __init__(self, font_path: Path | None = None, size: int = FONT_SIZE) -> None:
        self.font: ImageFont.FreeTypeFont | None = None
        self.font_file: str | None = None
        # what the report says (中文, English) when the labels could not use a CJK font
        self.note: tuple[str, str] | None = None
        found = find_label_font(font_path)
        if found is not None:
            try:
                self.font = ImageFont.truetype(str(found[0]), size, index=found[1])
                self.font_file = str(found[0])
            except OSError as exc:
                self.note = (
                    f"合成画面标注的中文字体 {found[0]} 无法加载（{exc}），改用 ASCII 点阵字体，"
                    "非 ASCII 字符显示为“?”",
                    f"the composite's label font {found[0]} does not load ({exc}): labels use "
                    "an ASCII bitmap font, other characters show as ?",
                )
        elif font_path is not None:
            self.note = (
                f"配置的合成画面标注字体不存在：{font_path}，改用 ASCII 点阵字体，非 ASCII 字符"
                "显示为“?”",
                f"the configured label font does not exist: {font_path}; labels use an ASCII "
                "bitmap font, other characters show as ?",
            )
        else:
            self.note = (
                f"未找到中文字体（请安装 Debian 软件包 {DEBIAN_PACKAGE}），合成画面的标注改用 "
                "ASCII 点阵字体，非 ASCII 字符（如中文姓名）显示为“?”",
                f"no Chinese font found (install the Debian package {DEBIAN_PACKAGE}): the "
                "composite's labels use an ASCII bitmap font, other characters (Chinese names) "
                "show as ?",
            )
        if self.font is not None:
            ascent, descent = self.font.getmetrics()
            self._line = ascent + descent
        else:
            self._line = 7 * BITMAP_SCALE
        self._stamps: dict[str, Stamp] = {}
        self._glyphs: dict[str, np.ndarray] = {}

    @property
    def height(self) -> int:
        """A stamp's height, the same for every text."""
        return self._line + 2 * PAD

    def _words(self, text: str) -> np.ndarray:
        """The coverage of ``text`` alone (no margin), ``self._line`` high."""
        if self.font is None:
            return text_mask(text, BITMAP_SCALE).astype(np.uint8) * 255
        box = self.font.getbbox(text)
        left = min(0, math.floor(box[0]))
        width = max(1, math.ceil(max(box[2], self.font.getlength(text))) - left)
        canvas = Image.new("L", (width, self._line), 0)
        ImageDraw.Draw(canvas).text((-left, 0), text, fill=255, font=self.font)
        return np.asarray(canvas, dtype=np.uint8)

    def _framed(self, words: np.ndarray) -> Stamp:
        mask = np.zeros((words.shape[0] + 2 * PAD, words.shape[1] + 2 * PAD), dtype=np.uint8)
        mask[PAD : PAD + words.shape[0], PAD : PAD + words.shape[1]] = words
        return Stamp(mask)

    def stamp(self, text: str) -> Stamp:
        """``text`` rendered once, then taken from the cache."""
        found = self._stamps.get(text)
        if found is None:
            found = self._stamps[text] = self._framed(self._words(text))
        return found

    def clock_stamp(self, text: str) -> Stamp:
        """A text new every frame (the clock), put together from its characters' cached
        renderings: no font rendering per frame once each character has been seen."""
        parts = []
        for char in text:
            glyph = self._glyphs.get(char)
            if glyph is None:
                glyph = self._glyphs[char] = self._words(char)
            parts.append(glyph)
        words = np.concatenate(parts, axis=1) if parts else np.zeros((self._line, 1), np.uint8)
        return self._framed(words)

    def fit(self, text: str, width: int) -> str:
        """``text`` shortened (with …) to fit ``width`` pixels of a stamp."""

        def fits(candidate: str) -> bool:
            return self._words(candidate).shape[1] + 2 * PAD <= width

        if fits(text):
            return text
        ellipsis = "…" if self.font is not None else "..."
        low, high = 0, len(text)
        while low < high:  # the longest prefix that fits with the ellipsis
            mid = (low + high + 1) // 2
            if fits(text[:mid] + ellipsis):
                low = mid
            else:
                high = mid - 1
        return text[:low] + ellipsis
