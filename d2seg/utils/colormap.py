"""Class colours for drawing: a fixed palette indexed by class id, per-instance jitter, and the
text colour that reads on a given background. Colours are RGB tuples of ints 0..255."""

import colorsys

import numpy as np

RGB = tuple[int, int, int]

_GOLDEN_RATIO = 0.618033988749895
# Saturation / value levels cycled with the hue, so neighbours in id differ in more than hue.
_SATURATIONS = (0.85, 0.6, 0.95)
_VALUES = (0.95, 0.8, 0.65)
_JITTER = 48.0  # length of the per-instance colour offset, in 0..255 units


def class_color(index: int) -> RGB:
    """The palette colour of class ``index`` (any int ≥ 0): the same for every call and run.

    Hues step by the golden ratio, so consecutive ids are far apart on the colour wheel.
    """
    hue = (0.382 + index * _GOLDEN_RATIO) % 1.0  # class 1 (a binary foreground) is red
    saturation = _SATURATIONS[index % len(_SATURATIONS)]
    value = _VALUES[(index // len(_SATURATIONS)) % len(_VALUES)]
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def jitter(color: RGB, seed: int) -> RGB:
    """``color`` moved by a fixed-length offset drawn from ``seed``: tells apart instances of
    one class while keeping them close to the class colour; deterministic in ``seed``."""
    offset = np.random.default_rng(seed).standard_normal(3)
    offset *= _JITTER / max(float(np.linalg.norm(offset)), 1e-6)
    return tuple(int(c) for c in np.clip(np.asarray(color) + offset, 0, 255).round())


def darker(color: RGB, factor: float = 0.55) -> RGB:
    """``color`` with every channel times ``factor`` (outlines around a tinted mask)."""
    return tuple(round(c * factor) for c in color)


def luminance(color: RGB) -> float:
    """WCAG relative luminance 0..1 of an sRGB colour."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in color]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def text_color(background: RGB) -> RGB:
    """Black or white, whichever has the higher WCAG contrast ratio on ``background``."""
    # (L + 0.05) / 0.05 (black) vs 1.05 / (L + 0.05) (white): equal at L = 0.179.
    return (0, 0, 0) if luminance(background) > 0.179 else (255, 255, 255)
