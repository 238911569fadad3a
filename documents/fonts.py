"""Find the Chinese TrueType font at run time, in the standard Debian paths; nothing downloaded."""

from __future__ import annotations

from pathlib import Path

from .errors import FontMissing

DEBIAN_PACKAGE = "fonts-wqy-zenhei"
# (path, face index in the collection). TrueType outlines only: reportlab and PDF/A viewers
# handle them everywhere, and fpdf2 embeds a subset.
CANDIDATES: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
    ("/usr/local/share/fonts/wqy-zenhei.ttc", 0),
)


def find_cjk_font(configured: Path | None = None) -> tuple[Path, int]:
    """The font file and its face index; ``configured`` (a .ttf or .ttc) wins when given."""
    if configured is not None:
        if not configured.is_file():
            raise FontMissing(
                f"配置的字体文件不存在：{configured} / the configured font file "
                f"does not exist: {configured}"
            )
        return configured, 0
    for path, index in CANDIDATES:
        if Path(path).is_file():
            return Path(path), index
    raise FontMissing(
        f"找不到中文 TrueType 字体，请安装 Debian 软件包 {DEBIAN_PACKAGE}（apt-get install -y "
        f"{DEBIAN_PACKAGE}）/ no Chinese TrueType font found: install the Debian package "
        f"{DEBIAN_PACKAGE}"
    )
