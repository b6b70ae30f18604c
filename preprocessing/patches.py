"""Local class-coded patches: a small pattern at a random position on the background.

Two patterns, each a square of side ``patch_side(image size)`` (4 px at 28 and 32 px, 8 px at
64 px):

- ``glyph``: a class's 4x4 binary code (255 for a 1 bit, 0 for a 0 bit), one cell per bit;
  the codes are at least 6 bits apart, so one flipped or occluded bit does not turn one
  class's glyph into another's.
- ``spot``: DecoyMNIST's uniform square of shade ``255 - 25 * code``, but at a random
  position rather than in a corner.

The square goes where it covers no pixel of the object mask (a uniform choice among those
positions), so the decoy never changes the object and the mask stays the object's. Only if
the object leaves no such position does it go where it covers the fewest object pixels, and
those pixels keep their values.
"""
from __future__ import annotations

import numpy as np

KINDS = ("glyph", "spot")
GLYPH_BITS = 4
SHADE_STEP = 25


def _glyph_codes(count: int = 10, min_distance: int = 6) -> np.ndarray:
    """``[count, 4, 4]`` {0, 1} codes, pairwise at least ``min_distance`` bits apart,
    with 5 to 11 bits set (never blank, never a full square); a fixed greedy choice."""
    rng = np.random.default_rng(20)
    codes: list[np.ndarray] = []
    while len(codes) < count:
        code = rng.integers(0, 2, GLYPH_BITS * GLYPH_BITS)
        if 5 <= code.sum() <= 11 and all((code != c).sum() >= min_distance for c in codes):
            codes.append(code)
    return np.stack(codes).reshape(count, GLYPH_BITS, GLYPH_BITS).astype(np.uint8)


GLYPHS = _glyph_codes()
MAX_CLASSES = {"glyph": len(GLYPHS), "spot": 255 // SHADE_STEP + 1}


def patch_side(image_size: int) -> int:
    """A multiple of 4 px (the glyph's cells) near ``4 * size / 28``: 4 px at 28 and 32 px."""
    return GLYPH_BITS * max(1, round(image_size / 28))


def pattern(kind: str, code: int, side: int) -> np.ndarray:
    """The ``[side, side]`` uint8 patch of class ``code``."""
    if kind == "glyph":
        cell = side // GLYPH_BITS
        return np.kron(GLYPHS[code], np.ones((cell, cell), np.uint8)) * np.uint8(255)
    if kind == "spot":
        return np.full((side, side), 255 - SHADE_STEP * code, np.uint8)
    raise ValueError(f"patch kind must be one of {KINDS}, got {kind!r}")


def window_counts(mask: np.ndarray, side: int) -> np.ndarray:
    """Object pixels under each ``side x side`` window, ``[H - side + 1, W - side + 1]``,
    indexed by the window's top-left corner (an integral image, no loop)."""
    obj = np.pad((mask > 0).astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return obj[side:, side:] - obj[:-side, side:] - obj[side:, :-side] + obj[:-side, :-side]


def place(mask: np.ndarray, side: int, rng: np.random.Generator) -> tuple[int, int]:
    """The top-left corner of a window on the background (see the module docstring)."""
    counts = window_counts(mask, side)
    free = np.flatnonzero(counts == counts.min())
    return tuple(int(v) for v in np.unravel_index(rng.choice(free), counts.shape))


def paint(image: np.ndarray, mask: np.ndarray, kind: str, code: int,
          rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` (``[H, W]`` uint8) with the patch of class ``code`` on its background
    (``mask`` > 0 is the object, left unchanged), and the patch's top-left corner."""
    side = patch_side(min(image.shape))
    top, left = place(mask, side, rng)
    out = image.copy()
    window = (slice(top, top + side), slice(left, left + side))
    out[window] = np.where(mask[window] > 0, image[window], pattern(kind, code, side))
    return out, (top, left)
