"""Where the tiles of tiled inference go: the tile windows covering an image, the blend
weights of overlapping semantic tiles, and when an image is large enough to be tiled at all.

Shared by :mod:`d2seg.engine.tiling` (tiles of pixels) and :mod:`d2seg.engine.feature_tiling`
(tile windows on shared feature maps).
"""

import math

import torch

from d2seg.errors import ConfigError


def _axis_starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis of ``size`` pixels: every ``stride``, the last flush with the
    far edge (one tile of the full size when ``size <= tile``)."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


def tile_windows(
    height: int, width: int, tile: int, overlap: float, *, align: int = 1
) -> list[tuple[int, int, int, int]]:
    """The tiles covering an H×W image: ``(y0, x0, y1, x1)`` pixel windows of ``tile``×``tile``
    (smaller only where the image is), consecutive tiles sharing about ``overlap``
    (0 ≤ overlap < 1) of their side.

    ``align``: the tile step is rounded down to a multiple of it (at least one ``align``; the
    overlap grows rather than shrinks), so with a tile and an image size that are multiples of
    ``align`` every window starts on a multiple of ``align`` (the feature-map grid of
    :mod:`d2seg.engine.feature_tiling`)."""
    if tile < 16 or not 0 <= overlap < 1:
        raise ConfigError(
            f"--tile {tile} --overlap {overlap}: the tile needs at least 16 pixels and the overlap "
            f"a fraction in [0, 1); fix: e.g. --tile 512 --overlap 0.25"
        )
    stride = max(align, round(tile * (1 - overlap)) // align * align)
    return [
        (y0, x0, min(y0 + tile, height), min(x0 + tile, width))
        for y0 in _axis_starts(height, tile, stride)
        for x0 in _axis_starts(width, tile, stride)
    ]


def blend_window(height: int, width: int) -> torch.Tensor:
    """H×W float32 weights: a raised cosine in each direction, 1 at the centre, falling to a
    small positive floor at the border (so pixels only one tile covers still count)."""

    def ramp(n: int) -> torch.Tensor:
        t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        return 0.5 - 0.5 * torch.cos(2 * math.pi * t) + 1e-3

    return ramp(height)[:, None] * ramp(width)[None, :]


def needs_tiling(height: int, width: int, min_size_test: int, max_size_test: int) -> bool:
    """Whether an H×W image is more than twice the model's test size (then the test-time
    resize would shrink it more than 2×); never for a model that does not resize
    (``INPUT.MIN_SIZE_TEST`` 0)."""
    if min_size_test <= 0:
        return False
    return min(height, width) > 2 * min_size_test or max(height, width) > 2 * max_size_test
