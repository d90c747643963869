"""Finding a font with Chinese glyphs on this machine, for documents in zh-CN.

Nothing is downloaded: bureau networks are often offline. The font comes from the settings
(``notices.pdf_font``) or from the usual places of Debian's CJK font packages, or from
fontconfig; every candidate is checked to really carry the glyphs a notice uses.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from dustpatrol.errors import DustpatrolError

# Debian packages, smallest first: fonts-wqy-microhei, fonts-wqy-zenhei, fonts-noto-cjk,
# fonts-arphic-uming.
KNOWN_FONTS = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
)
PROBE_TEXT = "整改通知书裸露土方道路积尘"
INSTALL_HINT = (
    "install a Chinese font (Debian: apt-get install fonts-wqy-microhei) "
    "or set notices.pdf_font (DUSTPATROL_NOTICES__PDF_FONT) to a TTF/TTC/OTF file"
)


class FontError(DustpatrolError):
    """No usable font with Chinese glyphs."""


def has_cjk_glyphs(path: Path) -> bool:
    """True if the font (the first face of a collection) maps every character of a notice."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        font = TTFont(str(path), fontNumber=0, lazy=True)
        cmap = font.getBestCmap() or {}
    except (OSError, TTLibError, AssertionError, KeyError):
        return False
    return all(ord(ch) in cmap for ch in PROBE_TEXT)


def _fontconfig_candidates() -> list[Path]:
    if shutil.which("fc-list") is None:
        return []
    try:
        listed = subprocess.run(
            ["fc-list", ":lang=zh-cn", "file"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    files = sorted({line.split(":")[0].strip() for line in listed.splitlines() if line.strip()})
    return [Path(f) for f in files if f.lower().endswith((".ttf", ".ttc", ".otf"))]


@lru_cache(maxsize=8)
def find_cjk_font(configured: Path | None = None) -> Path:
    """The font to use: ``configured`` if given (it must work), else the first system font
    that carries Chinese glyphs. Raises FontError saying what to install."""
    if configured is not None:
        if not configured.is_file():
            raise FontError(f"notices.pdf_font {configured} does not exist; {INSTALL_HINT}")
        if not has_cjk_glyphs(configured):
            raise FontError(
                f"notices.pdf_font {configured} is not a font with Chinese glyphs; {INSTALL_HINT}"
            )
        return configured
    for candidate in (*KNOWN_FONTS, *_fontconfig_candidates()):
        if candidate.is_file() and has_cjk_glyphs(candidate):
            return candidate
    raise FontError(f"no font with Chinese glyphs found for notice PDFs; {INSTALL_HINT}")
