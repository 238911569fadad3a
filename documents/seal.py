"""The department's default seal image, drawn in code: a red ring, the department's name along
the upper arc, a star, and the seal's name (e.g. 交通事故处理专用章) across the lower half.

It is only the *appearance* of the seal signature; what makes the seal legally a seal is the
signature by the department's seal certificate (see docs/documents.md). A brigade can configure
the image of its registered seal instead (:func:`load_seal`).
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .errors import DocumentError
from .fonts import find_cjk_font

RED = (200, 16, 16, 255)


def draw_seal(
    department: str,
    seal_name: str = "交通事故处理专用章",
    size: int = 480,
    font: Path | None = None,
) -> Image.Image:
    """An RGBA image with a transparent background."""
    path, index = find_cjk_font(font)
    img = Image.new("RGBA", (size, size), (255, 255, 255, 0))
    draw = ImageDraw.Draw(img)
    c = size / 2
    ring = size * 0.035
    draw.ellipse(
        (ring / 2, ring / 2, size - ring / 2, size - ring / 2), outline=RED, width=int(ring)
    )
    # five-pointed star in the middle
    r_out, r_in = size * 0.16, size * 0.065
    pts = []
    for i in range(10):
        r = r_out if i % 2 == 0 else r_in
        a = -math.pi / 2 + i * math.pi / 5
        pts.append((c + r * math.cos(a), c + r * math.sin(a)))
    draw.polygon(pts, fill=RED)
    # the name along the upper arc, from about 8 o'clock to 4 o'clock
    chars = list(department)
    glyph = max(18, min(int(size * 0.12), int(size * 2.6 / max(len(chars), 1))))
    text_font = ImageFont.truetype(str(path), glyph, index=index)
    span = math.radians(240 if len(chars) > 4 else 160)
    radius = c - ring - glyph * 0.75
    for i, ch in enumerate(chars):
        a = -math.pi / 2 - span / 2 + (span * (i + 0.5) / len(chars))
        tile = Image.new("RGBA", (glyph * 2, glyph * 2), (255, 255, 255, 0))
        ImageDraw.Draw(tile).text((glyph, glyph), ch, font=text_font, fill=RED, anchor="mm")
        tile = tile.rotate(-math.degrees(a + math.pi / 2), resample=Image.Resampling.BICUBIC)
        x, y = c + radius * math.cos(a), c + radius * math.sin(a)
        img.alpha_composite(tile, (int(x - glyph), int(y - glyph)))
    name_font = ImageFont.truetype(str(path), int(size * 0.075), index=index)
    draw.text((c, c + size * 0.27), seal_name, font=name_font, fill=RED, anchor="mm")
    return img


def load_seal(path: Path) -> Image.Image:
    """A configured seal image (PNG with transparency is best)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGBA")
    except (OSError, ValueError) as exc:
        raise DocumentError(
            f"印章图片无法读取：{path}（{exc}）/ cannot read the seal image {path}: {exc}"
        ) from None
