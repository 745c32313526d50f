"""Palette, shape and text rasterising helpers for the synthetic scenes (black background, uint8 RGB)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Saturated colours with hues at least ~40° apart, so they stay distinct after downsampling and yuv420p.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "yellow": (240, 220, 20),
    "green": (30, 200, 50),
    "cyan": (20, 210, 230),
    "blue": (40, 70, 240),
    "purple": (190, 40, 240),
}
SHAPES = ("square", "circle")
DIRECTIONS = ("left", "right", "up", "down")
_DIRECTION_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# Capitals that do not look alike at low resolution (no O/Q/D/0, I/J/L/1, B/8, G/C).
_LETTERS = "ACEFHKMNPRSTUXYZ"
_TEXT_RGB = (255, 255, 255)
_GRID_RGB = (110, 110, 110)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive


def _box(cx: float, cy: float, side: float) -> Box:
    """Integer pixel box of a shape centred at (cx, cy)."""
    px = int(round(side))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    return x0, y0, x0 + px, y0 + px


def _centre(box: Box) -> tuple[float, float]:
    """Centre of a pixel box in continuous coordinates (pixel i covers [i, i+1))."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _paint(img: np.ndarray, shape: str, box: Box, rgb: tuple[int, int, int]) -> None:
    """Paint a filled square or circle into img in place, clipped to the frame."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    if x0 >= x1 or y0 >= y1:
        return
    if shape == "square":
        img[y0:y1, x0:x1] = rgb
        return
    cx, cy = _centre(box)
    r = (box[2] - box[0]) / 2
    yy, xx = np.ogrid[y0:y1, x0:x1]
    mask = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
    img[y0:y1, x0:x1][mask] = rgb


def _blank(size: int, frames: int | None = None) -> np.ndarray:
    """Black image [S, S, 3] or video [F, S, S, 3]."""
    shape = (size, size, 3) if frames is None else (frames, size, size, 3)
    return np.zeros(shape, dtype=np.uint8)


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at a pixel size (no system fonts, so output is the same everywhere)."""
    return ImageFont.load_default(size=px)


def _text(img: np.ndarray, text: str, size_px: int, cx: float, cy: float) -> np.ndarray:
    """Draw white text centred at (cx, cy), shrinking the font until it fits 90% of the width."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    limit = 0.9 * img.shape[1]
    while True:
        font = _font(size_px)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= limit or size_px <= 8:
            break
        size_px -= 2
    draw.text((cx - (left + right) / 2, cy - (top + bottom) / 2), text, font=font, fill=_TEXT_RGB)
    return np.array(pil)


def _lerp(a: float, b: float, i: int, n: int) -> float:
    """Value at step i of n equal steps from a to b."""
    return a + (b - a) * i / max(n - 1, 1)
