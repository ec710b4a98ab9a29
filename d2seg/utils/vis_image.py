"""The canvas the :class:`~d2seg.utils.visualizer.Visualizer` draws on, and its primitives.

Every primitive takes masks and boxes at the INPUT image's resolution and draws them on the
canvas, which is the input resized by ``scale``. Line widths, font size and padding follow the
canvas size (see :attr:`VisImage.font_size`), so a drawing reads the same at 256 px and at
4000 px.
"""

import functools
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from d2seg.errors import D2SegError
from d2seg.utils.colormap import RGB, text_color
from d2seg.utils.io import atomic_open

_ENCODINGS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}
_LABEL_OPACITY = 0.85
_LEGEND_OPACITY = 0.6
_LEGEND_MAX_HEIGHT = 0.45  # of the canvas: a longer legend wraps into columns
_METRICS_TEXT = "Ag%"  # ascender + descender: one label height for every text


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (≥ 10.1)


class VisImage:
    """An RGB uint8 canvas: the input image resized by ``scale``, then drawn on.

    Args:
        img: H×W×3 uint8 RGB.
        scale: output size factor; the canvas is round(H·scale)×round(W·scale).
    """

    def __init__(self, img: np.ndarray, scale: float = 1.0):
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}; fix: pass e.g. scale=0.5")
        self.scale = scale
        self._input_size = img.shape[:2]
        size = (max(round(img.shape[1] * scale), 1), max(round(img.shape[0] * scale), 1))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = img if size == img.shape[1::-1] else cv2.resize(img, size,
                                                                  interpolation=interpolation)
        self.canvas = np.ascontiguousarray(resized, dtype=np.uint8)
        self.height, self.width = self.canvas.shape[:2]
        self.font_size = int(max(math.sqrt(self.height * self.width) // 60, 10))
        self.line_width = max(round(self.font_size / 6), 1)  # boxes
        self.outline_width = max(round(self.font_size / 12), 1)  # mask outlines
        self.padding = max(round(self.font_size / 4), 2)
        self._labelled = np.zeros((self.height, self.width), dtype=bool)  # where labels are

    # -- output ---------------------------------------------------------------------------

    def get_image(self) -> np.ndarray:
        """The drawing: round(H·scale)×round(W·scale)×3 uint8 RGB (a copy)."""
        return self.canvas.copy()

    def save(self, path: str | Path) -> None:
        """Write the drawing to ``path`` (.png or .jpg/.jpeg) atomically."""
        path = Path(path)
        encoding = _ENCODINGS.get(path.suffix.lower())
        if encoding is None:
            raise D2SegError(
                f"cannot save a visualisation as {path} (unknown image type "
                f"'{path.suffix}'); fix: end the file name with .png or .jpg"
            )
        ok, data = cv2.imencode(encoding, cv2.cvtColor(self.canvas, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {encoding} image for {path}")
        with atomic_open(path, "wb") as f:
            f.write(data.tobytes())

    # -- coordinates ----------------------------------------------------------------------

    def _to_canvas(self, mask: np.ndarray) -> np.ndarray:
        """An input-size H×W bool mask at the canvas size."""
        if mask.shape != self._input_size:
            raise ValueError(
                f"a mask is {mask.shape[0]}×{mask.shape[1]} but the image is "
                f"{self._input_size[0]}×{self._input_size[1]}; fix: give masks at the "
                f"image's size (detector_postprocess pastes them at height×width)"
            )
        if mask.shape == (self.height, self.width):
            return mask
        resized = cv2.resize(mask.astype(np.uint8), (self.width, self.height),
                             interpolation=cv2.INTER_NEAREST)
        return resized.astype(bool)

    def _box_to_canvas(self, box: np.ndarray) -> tuple[int, int, int, int]:
        """XYXY input pixels → integer canvas pixels x0, y0, x1, y1 (x1, y1 exclusive)."""
        x0, y0, x1, y1 = (float(v) * self.scale for v in box)
        return round(x0), round(y0), max(round(x1), round(x0) + 1), max(round(y1), round(y0) + 1)

    # -- primitives -----------------------------------------------------------------------

    def grayscale_outside(self, mask: np.ndarray) -> None:
        """Turn every canvas pixel outside ``mask`` (input-size H×W bool) gray (R = G = B)."""
        outside = ~self._to_canvas(mask)
        gray = cv2.cvtColor(self.canvas, cv2.COLOR_RGB2GRAY)
        self.canvas[outside] = gray[outside][:, None]

    def fill(self, mask: np.ndarray, color: RGB, alpha: float) -> None:
        """Blend ``color`` into the pixels of ``mask`` (input-size H×W bool) with ``alpha``."""
        mask = self._to_canvas(mask)
        pixels = self.canvas[mask].astype(np.float32)
        self.canvas[mask] = (pixels * (1 - alpha) + np.float32(color) * alpha).round()

    def outline(self, mask: np.ndarray, color: RGB) -> None:
        """Draw the border of ``mask`` (input-size H×W bool), holes included."""
        contours, _ = cv2.findContours(self._to_canvas(mask).astype(np.uint8), cv2.RETR_CCOMP,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(self.canvas, contours, -1, color, self.outline_width, cv2.LINE_AA)

    def rectangle(self, box: np.ndarray, color: RGB) -> None:
        """Draw box ``box`` (XYXY input pixels) inside its pixels with :attr:`line_width`."""
        x0, y0, x1, y1 = self._box_to_canvas(box)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.width), min(y1, self.height)
        lw = self.line_width
        for side in (np.s_[y0:y0 + lw, x0:x1], np.s_[y1 - lw:y1, x0:x1],
                     np.s_[y0:y1, x0:x0 + lw], np.s_[y0:y1, x1 - lw:x1]):
            self.canvas[side] = color

    def _text_size(self, text: str) -> tuple[int, int]:
        """Width and height of a padded text box for ``text``, in canvas pixels."""
        font = _font(self.font_size)
        _, top, _, bottom = font.getbbox(_METRICS_TEXT)
        left, _, right, _ = font.getbbox(text)
        return right - left + 2 * self.padding, bottom - top + 2 * self.padding

    def _text_box(self, x: int, y: int, text: str, background: RGB, opacity: float) -> None:
        """``text`` on a ``background`` box (``opacity``) whose top-left is canvas (x, y)."""
        w, h = self._text_size(text)
        x0, y0 = max(x, 0), max(y, 0)
        region = self.canvas[y0:y + h, x0:x + w]
        if not region.size:
            return
        region[:] = (region * (1 - opacity) + np.float32(background) * opacity).round()
        font = _font(self.font_size)
        patch = Image.fromarray(region)
        left, top = font.getbbox(text)[0], font.getbbox(_METRICS_TEXT)[1]
        ImageDraw.Draw(patch).text((x - x0 + self.padding - left, y - y0 + self.padding - top),
                                   text, font=font, fill=text_color(background))
        region[:] = np.asarray(patch)

    def label(self, text: str, box: np.ndarray, color: RGB) -> None:
        """Draw ``text`` on a ``color`` box next to the object in ``box`` (XYXY input pixels).

        The label sits on the box's top-left corner, outside it (above; below when there is no
        room above; inside at the top when neither fits), shifted to stay inside the canvas.
        """
        x0, y0, x1, y1 = self._box_to_canvas(box)
        w, h = self._text_size(text)
        if y0 - h >= 0:
            y = y0 - h
        elif y1 + h <= self.height:
            y = y1
        else:
            y = y0
        x = min(max(x0, 0), max(self.width - w, 0))
        y = min(max(y, 0), max(self.height - h, 0))
        self._text_box(x, y, text, color, _LABEL_OPACITY)
        self._labelled[y:y + h, x:x + w] = True

    def legend(self, entries: list[tuple[str, RGB]], covered: np.ndarray) -> None:
        """A colour swatch + name per entry, in the corner that hides least of ``covered``.

        ``covered`` (input-size H×W bool) marks what the legend should not hide (the drawn
        regions); hiding a label drawn by :meth:`label` costs more. Entries wrap into columns
        beyond :data:`_LEGEND_MAX_HEIGHT` of the canvas height.
        """
        if not entries:
            return
        pad = self.padding
        swatch = self._text_size("")[1] - 2 * pad
        row_h = swatch + pad
        rows = max(min(len(entries), int(self.height * _LEGEND_MAX_HEIGHT - pad) // row_h), 1)
        columns = [entries[i:i + rows] for i in range(0, len(entries), rows)]
        widths = [max(self._text_size(name)[0] for name, _ in col) + swatch for col in columns]
        legend_w = sum(widths) + pad
        legend_h = min(rows, len(entries)) * row_h + pad
        x, y = self._emptiest_corner(self._to_canvas(covered), legend_w, legend_h)
        region = self.canvas[y:y + legend_h, x:x + legend_w]
        region[:] = (region * (1 - _LEGEND_OPACITY)).round()  # black, semi-opaque
        column_x = x + pad
        for col, width in zip(columns, widths):
            for row, (name, color) in enumerate(col):
                top = y + pad + row * row_h
                cv2.rectangle(self.canvas, (column_x, top),
                              (column_x + swatch - 1, top + swatch - 1), color, cv2.FILLED)
                cv2.rectangle(self.canvas, (column_x, top),
                              (column_x + swatch - 1, top + swatch - 1), (255, 255, 255), 1)
                # Opacity 0 keeps the darkened backdrop and writes white text on it.
                self._text_box(column_x + swatch, top - pad, name, (0, 0, 0), 0.0)
            column_x += width

    def _emptiest_corner(self, covered: np.ndarray, w: int, h: int) -> tuple[int, int]:
        """Top-left of the w×h corner box (top-right, top-left, bottom-right, bottom-left; the
        first wins ties) that hides least: ``covered`` canvas pixels, label pixels ×10."""
        margin = self.padding
        right, bottom = max(self.width - w - margin, 0), max(self.height - h - margin, 0)
        corners = [(right, margin), (margin, margin), (right, bottom), (margin, bottom)]

        def cost(corner: tuple[int, int]) -> int:
            box = np.s_[corner[1]:corner[1] + h, corner[0]:corner[0] + w]
            return int(covered[box].sum()) + 10 * int(self._labelled[box].sum())

        return min(corners, key=cost)
