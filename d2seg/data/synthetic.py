"""Deterministic synthetic datasets for tests, the demo and the benchmarks.

Four kinds, each a small stand-in for a real dataset d2seg is used on:

- ``balloons``: coloured balloons (rotated ellipses with a highlight and a string) on a sky
  gradient; one class, ``"balloon"``; one polygon per balloon. Written as Labelme.
- ``chipsets``: a PCB with traces, ``"chip"`` (a dark body with pins), ``"capacitor"`` (round,
  polygon) and ``"resistor"`` (``rectangle`` shape). Some chips are crossed by a wire, so the
  visible chip is annotated as two polygons sharing a ``group_id``. Written as Labelme.
- ``shapes``: large discs, squares and triangles (one class each, each with its own range of
  hues, randomly sized and turned) on a mottled background: a multi-class set whose objects
  span a quarter to a half of the image side, so models with a coarse output stride (16: 4×4
  logits at 64 px) can still resolve them. One polygon per object. Written as Labelme.
- ``carvana``: the side view of a car (body + cabin + wheels) in a studio, written as Carvana
  does: ``<id>.jpg`` and ``<id>_mask.gif`` (palette GIF, 0 = background, 1 = car), no JSON.

The ground truth is exact by construction: every object is painted *through* the masks of its
own annotation shapes, rasterised by :func:`d2seg.data.labelme.rasterize_shape` (which matches
``labelme.utils.shape_to_mask`` pixel for pixel), and objects never overlap. Rasterising the
annotation therefore gives back the object's pixels exactly, so a model can reach IoU near 1.

Image ``i`` of a dataset made with ``seed=s`` is drawn from ``numpy.random.default_rng([s, i])``:
the same seed gives byte-identical files, and :func:`render_sample` returns the same image in
memory.
"""

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from PIL import Image, ImageDraw

from d2seg.data.labelme import RESERVED_LABELS, LabelmeShape, rasterize_shape
from d2seg.errors import ConfigError
from d2seg.utils.io import atomic_directory

# The last 5.x file layout without a per-shape "mask" key: what most Labelme datasets hold.
LABELME_VERSION = "5.3.1"
JPEG_QUALITY = 92
MIN_IMAGE_SIDE = 48

SYNTHETIC_CLASSES: dict[str, tuple[str, ...]] = {
    "balloons": ("balloon",),
    "chipsets": ("chip", "capacitor", "resistor"),
    "carvana": ("car",),
    "shapes": ("disc", "square", "triangle"),
}
# ``shapes`` classes: (hue centre 0..1, objects vary ±0.06 around it; corners, 0 = a circle).
SHAPE_STYLES = {"disc": (0.0, 0), "square": (0.62, 4), "triangle": (0.15, 3)}

Size = tuple[int, int]


@dataclass
class SyntheticShape:
    """One Labelme shape: ``points`` are ``[[x, y], ...]`` in pixels (rectangle: two corners)."""

    shape_type: Literal["polygon", "rectangle"]
    points: list[list[float]]


@dataclass
class SyntheticObject:
    """One instance: its label and the shapes whose union is its visible mask."""

    label: str
    shapes: list[SyntheticShape]


@dataclass
class SyntheticScene:
    """One rendered image (H×W×3 uint8 RGB) and its objects in annotation order."""

    image: np.ndarray
    objects: list[SyntheticObject]


def _rasterise(
    height: int, width: int, draw: Callable[[ImageDraw.ImageDraw], object]
) -> np.ndarray:
    """Run ``draw`` (fill value 1) on an empty canvas; returns a bool H×W mask."""
    canvas = Image.new("L", (width, height), 0)
    draw(ImageDraw.Draw(canvas))
    return np.asarray(canvas, dtype=bool)


def shape_mask(shape: SyntheticShape, height: int, width: int) -> np.ndarray:
    """Bool H×W mask of ``shape``, rasterised by d2seg's Labelme reader (= labelme's own)."""
    points = np.asarray(shape.points, dtype=np.float64)
    return rasterize_shape(LabelmeShape(0, "", shape.shape_type, points, None), height, width)


def object_mask(obj: SyntheticObject, height: int, width: int) -> np.ndarray:
    """Bool H×W instance mask: the union of the object's shape masks."""
    mask = np.zeros((height, width), dtype=bool)
    for shape in obj.shapes:
        mask |= shape_mask(shape, height, width)
    return mask


def _polygon(points: np.ndarray) -> SyntheticShape:
    # Rounded before use, so the file and the painted pixels come from the same numbers.
    return SyntheticShape("polygon", np.round(np.asarray(points, dtype=np.float64), 2).tolist())


def _rectangle(x0: int, y0: int, x1: int, y1: int) -> SyntheticShape:
    return SyntheticShape("rectangle", [[float(x0), float(y0)], [float(x1), float(y1)]])


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """N×2 vertices of a rotated ellipse, about one per 2 px of outline (at least 24)."""
    num = int(np.clip(math.pi * (rx + ry) / 2, 24, 128))
    t = np.linspace(0.0, 2 * math.pi, num, endpoint=False)
    ca, sa = math.cos(angle), math.sin(angle)
    x = cx + rx * np.cos(t) * ca - ry * np.sin(t) * sa
    y = cy + rx * np.cos(t) * sa + ry * np.sin(t) * ca
    return np.stack([x, y], axis=1)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Float32 H×W low-frequency noise in about [0, 1] (a cells×cells grid, bicubic-upsampled)."""
    grid = Image.fromarray(rng.random((cells, cells), dtype=np.float32), mode="F")
    return np.asarray(grid.resize((width, height), Image.Resampling.BICUBIC))


def _vertical_gradient(height: int, width: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Float32 H×W×3 image going from RGB ``top`` to RGB ``bottom``."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * top + t * bottom, (height, width, 3)).astype(np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise and quantise to uint8."""
    noisy = image + rng.normal(0.0, 3.0, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


class _Placer:
    """Finds free spots for axis-aligned footprints that must not overlap (with a margin)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, margin: int = 2):
        self.rng, self.height, self.width, self.margin = rng, height, width, margin
        self.boxes: list[tuple[float, float, float, float]] = []

    def place(self, box_w: float, box_h: float, attempts: int = 40) -> tuple[int, int] | None:
        """Top-left (x, y) of a free ``box_w``×``box_h`` spot inside the image, or None."""
        m = self.margin
        max_x, max_y = self.width - m - math.ceil(box_w), self.height - m - math.ceil(box_h)
        if max_x < m or max_y < m:
            return None
        for _ in range(attempts):
            x, y = int(self.rng.integers(m, max_x + 1)), int(self.rng.integers(m, max_y + 1))
            box = (x - m, y - m, x + box_w + m, y + box_h + m)
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1]
                   for b in self.boxes):
                self.boxes.append(box)
                return x, y
        return None


def _render_balloons(rng: np.random.Generator, height: int, width: int) -> SyntheticScene:
    sky = _vertical_gradient(height, width, _hsv(0.58, 0.55, 0.85), _hsv(0.55, 0.15, 0.98))
    clouds = _smooth_noise(rng, height, width, cells=5)[..., None]
    image = sky * (0.85 + 0.25 * clouds)
    side = min(height, width)
    placer = _Placer(rng, height, width)
    painted = np.zeros((height, width), dtype=bool)
    objects = []
    for _ in range(int(rng.integers(1, 5))):
        rx = side * rng.uniform(0.08, 0.18)
        ry = rx * rng.uniform(1.1, 1.3)
        angle = math.radians(rng.uniform(-25, 25))
        outline = _ellipse_points(0.0, 0.0, rx, ry, angle)
        low, high = outline.min(axis=0), outline.max(axis=0)
        spot = placer.place(*(high - low))
        if spot is None:
            continue
        shape = _polygon(outline - low + spot)
        mask = shape_mask(shape, height, width)
        cx, cy = np.mean(shape.points, axis=0)
        # The string hangs from the lowest point, behind every balloon.
        knot = max(shape.points, key=lambda p: p[1])
        sway = rng.uniform(-0.1, 0.1) * side
        string = [(knot[0], knot[1]), (knot[0] + sway, knot[1] + 0.35 * side)]
        image[_rasterise(height, width, lambda d: d.line(string, fill=1, width=1)) & ~painted] = 70
        painted |= mask
        # Shading: brighter towards a highlight up-left of the centre.
        ys, xs = np.nonzero(mask)
        hx, hy = cx - 0.4 * rx, cy - 0.4 * ry
        dist = np.hypot(xs - hx, ys - hy) / (2 * max(rx, ry))
        colour = _hsv(rng.random(), rng.uniform(0.65, 0.95), rng.uniform(0.7, 0.95))
        image[ys, xs] = colour * np.clip(1.15 - 0.6 * dist, 0.4, 1.2)[:, None]
        highlight = _ellipse_points(hx, hy, 0.2 * rx, 0.14 * ry, angle)
        glare = mask & shape_mask(_polygon(highlight), height, width)
        image[glare] = 0.4 * image[glare] + 0.6 * 255
        objects.append(SyntheticObject("balloon", [shape]))
    return SyntheticScene(_finish(image, rng), objects)


def _paint_chip(image: np.ndarray, rng: np.random.Generator, placer: _Placer, height: int,
                width: int, occluded: bool) -> SyntheticObject | None:
    """A dark chip body with pins left and right; ``occluded``: a wire crosses it."""
    side = min(height, width)
    body_w, body_h = int(side * rng.uniform(0.2, 0.32)), int(side * rng.uniform(0.14, 0.24))
    pin_len, pin_w = max(2, side // 40), max(1, side // 64)
    wire_w = max(3, side // 32)
    # The wire runs past the body; it is part of the footprint so nothing else lies under it.
    overhang = max(4, side // 16) if occluded else 0
    spot = placer.place(body_w + 2 * pin_len, body_h + 2 * overhang)
    if spot is None:
        return None
    x0, y0 = spot[0] + pin_len, spot[1] + overhang
    x1, y1 = x0 + body_w - 1, y0 + body_h - 1
    for py in range(y0 + 2, y1 - 1, 2 * pin_w + 1):
        image[py:py + pin_w, x0 - pin_len:x0] = (190, 190, 180)
        image[py:py + pin_w, x1 + 1:x1 + 1 + pin_len] = (190, 190, 180)
    if occluded:
        wx0 = int(rng.integers(x0 + body_w // 3, x0 + 2 * body_w // 3 - wire_w + 1))
        wx1 = wx0 + wire_w - 1
        shapes = [_polygon(np.array([[x0, y0], [wx0 - 1, y0], [wx0 - 1, y1], [x0, y1]])),
                  _polygon(np.array([[wx1 + 1, y0], [x1, y0], [x1, y1], [wx1 + 1, y1]]))]
    else:
        shapes = [_polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))]
    obj = SyntheticObject("chip", shapes)
    mask = object_mask(obj, height, width)
    image[mask] = rng.uniform(25, 45)
    dot = _polygon(_ellipse_points(x0 + 4, y0 + 4, 1.5, 1.5))
    image[mask & shape_mask(dot, height, width)] = 120
    if occluded:
        wire = _rectangle(wx0, y0 - overhang, wx1, y1 + overhang)
        image[shape_mask(wire, height, width)] = _hsv(rng.choice([0.0, 0.6, 0.15]), 0.8, 0.8)
    return obj


def _paint_capacitor(image: np.ndarray, rng: np.random.Generator, placer: _Placer, height: int,
                     width: int) -> SyntheticObject | None:
    """An electrolytic capacitor seen from above: a disk with a polarity stripe and vent."""
    r = min(height, width) * rng.uniform(0.05, 0.09)
    spot = placer.place(2 * r, 2 * r)
    if spot is None:
        return None
    cx, cy = spot[0] + r, spot[1] + r
    shape = _polygon(_ellipse_points(cx, cy, r, r))
    mask = shape_mask(shape, height, width)
    ys, xs = np.nonzero(mask)
    image[ys, xs] = _hsv(0.62, 0.6, rng.uniform(0.3, 0.5))
    stripe = xs > cx + 0.45 * r
    image[ys[stripe], xs[stripe]] = (200, 200, 210)
    vent = (np.abs(xs - cx) < 0.8) | (np.abs(ys - cy) < 0.8)
    image[ys[vent], xs[vent]] = (150, 150, 160)
    return SyntheticObject("capacitor", [shape])


def _paint_resistor(image: np.ndarray, rng: np.random.Generator, placer: _Placer, height: int,
                    width: int) -> SyntheticObject | None:
    """A banded resistor with its leads (leads are not part of the ``rectangle`` shape)."""
    side = min(height, width)
    length, thick, lead = int(side * rng.uniform(0.12, 0.2)), max(4, int(side * 0.05)), side // 25
    vertical = bool(rng.integers(0, 2))
    box_w, box_h = (thick, length + 2 * lead) if vertical else (length + 2 * lead, thick)
    spot = placer.place(box_w, box_h)
    if spot is None:
        return None
    x, y = spot
    leads = (x + thick // 2 - 1, y, x + thick // 2, y + box_h - 1) if vertical else \
        (x, y + thick // 2 - 1, x + box_w - 1, y + thick // 2)
    image[shape_mask(_rectangle(*leads), height, width)] = (170, 170, 170)
    shape = _rectangle(x, y + lead, x + thick - 1, y + lead + length - 1) if vertical else \
        _rectangle(x + lead, y, x + lead + length - 1, y + thick - 1)
    mask = shape_mask(shape, height, width)
    image[mask] = (210, 190, 140)
    ys, xs = np.nonzero(mask)
    along = (ys - y - lead) if vertical else (xs - x - lead)
    for k, hue in enumerate(rng.random(3)):
        band = (along >= (k + 1) * length // 5) & (along < (k + 1) * length // 5 + 2)
        image[ys[band], xs[band]] = _hsv(hue, 0.9, 0.7)
    return SyntheticObject("resistor", [shape])


def _render_chipsets(rng: np.random.Generator, height: int, width: int) -> SyntheticScene:
    board = _hsv(0.36, 0.75, 0.45) * (0.9 + 0.2 * _smooth_noise(rng, height, width, 8)[..., None])
    image = board.astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):
        at = int(rng.integers(0, max(height, width)))
        trace = (0, at, width - 1, at + 1) if rng.random() < 0.5 else (at, 0, at + 1, height - 1)
        image[shape_mask(_rectangle(*trace), height, width)] = _hsv(0.3, 0.6, 0.6)
    placer = _Placer(rng, height, width, margin=3)
    objects = []
    for k in range(int(rng.integers(1, 3))):
        objects.append(_paint_chip(image, rng, placer, height, width, occluded=k == 0))
    for _ in range(int(rng.integers(1, 4))):
        objects.append(_paint_capacitor(image, rng, placer, height, width))
    for _ in range(int(rng.integers(1, 4))):
        objects.append(_paint_resistor(image, rng, placer, height, width))
    return SyntheticScene(_finish(image, rng), [o for o in objects if o is not None])


def _render_carvana(rng: np.random.Generator, height: int, width: int) -> SyntheticScene:
    wall = _vertical_gradient(height, width, np.full(3, 235.0), np.full(3, 190.0))
    image = wall * (0.95 + 0.08 * _smooth_noise(rng, height, width, 4)[..., None])
    length = min(width * rng.uniform(0.6, 0.8), height * 1.5)
    body_h = length * rng.uniform(0.17, 0.22)
    cabin_h, wheel_r = body_h * rng.uniform(0.75, 0.95), body_h * rng.uniform(0.42, 0.5)
    total_h = cabin_h + body_h + 0.8 * wheel_r  # wheel centres sit 0.2 r above the sills
    left = (width - length) / 2 + rng.uniform(-0.1, 0.1) * (width - length)
    top = (height - total_h) / 2 + rng.uniform(-0.2, 0.2) * (height - total_h)
    facing = 1.0 if rng.random() < 0.5 else -1.0  # 1: the bonnet is on the left

    def to_image(points: np.ndarray) -> np.ndarray:
        """Car coordinates (x along the car from the bonnet, y down from the roof) → pixels."""
        x = points[:, 0] if facing > 0 else length - points[:, 0]
        return np.stack([left + x, top + points[:, 1]], axis=1)

    body_top, body_bottom = cabin_h, cabin_h + body_h
    corner = body_h * 0.35
    rounded = []
    for cx, cy, start in ((length - corner, body_bottom - corner, 0.0),
                          (corner, body_bottom - corner, 0.5 * math.pi),
                          (corner, body_top + corner, math.pi),
                          (length - corner, body_top + corner, 1.5 * math.pi)):
        t = np.linspace(start, start + 0.5 * math.pi, 8)
        rounded.append(np.stack([cx + corner * np.cos(t), cy + corner * np.sin(t)], axis=1))
    body = _polygon(to_image(np.concatenate(rounded)))
    roof = [0.30, 0.42, 0.72, 0.86]
    cabin_outline = np.array([[roof[0] * length, body_top + 2], [roof[1] * length, 0.0],
                              [roof[2] * length, 0.0], [roof[3] * length, body_top + 2]])
    cabin = _polygon(to_image(cabin_outline))
    wheel_x = (0.18 * length, 0.8 * length)
    wheels = [_polygon(to_image(_ellipse_points(x, body_bottom - 0.2 * wheel_r, wheel_r, wheel_r)))
              for x in wheel_x]
    car = SyntheticObject("car", [body, cabin, *wheels])

    shadow_centre = to_image(np.array([[length / 2, body_bottom + 0.8 * wheel_r]]))[0]
    shadow = _polygon(_ellipse_points(*shadow_centre, 0.55 * length, 0.25 * wheel_r))
    image[shape_mask(shadow, height, width)] *= 0.7
    car_mask = object_mask(car, height, width)
    paint = _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.4, 0.9))
    image[car_mask] = paint * (0.8 + 0.3 * _smooth_noise(rng, height, width, 3)[car_mask][:, None])
    centre = cabin_outline.mean(axis=0)
    glass = _polygon(to_image(centre + 0.72 * (cabin_outline - centre)))
    image[car_mask & shape_mask(glass, height, width)] = (90, 110, 130)
    lamp_x = 0.03 * length
    lamp = _polygon(to_image(_ellipse_points(lamp_x, body_top + 0.35 * body_h, 0.03 * length, 2)))
    image[car_mask & shape_mask(lamp, height, width)] = (250, 240, 190)
    for wheel, x in zip(wheels, wheel_x):
        image[shape_mask(wheel, height, width)] = 30
        hub = _ellipse_points(x, body_bottom - 0.2 * wheel_r, 0.5 * wheel_r, 0.5 * wheel_r)
        image[shape_mask(_polygon(to_image(hub)), height, width)] = 150
    return SyntheticScene(_finish(image, rng), [car])


def _regular_polygon(corners: int, radius: float, angle: float) -> np.ndarray:
    """corners×2 vertices of a regular polygon around (0, 0), turned by ``angle`` radians."""
    t = angle + np.arange(corners) * 2 * math.pi / corners
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _render_shapes(rng: np.random.Generator, height: int, width: int) -> SyntheticScene:
    base = _hsv(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.6))
    image = base * (0.75 + 0.5 * _smooth_noise(rng, height, width, cells=6)[..., None])
    side = min(height, width)
    placer = _Placer(rng, height, width)
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        label = SYNTHETIC_CLASSES["shapes"][int(rng.integers(0, 3))]
        hue, corners = SHAPE_STYLES[label]
        radius = side * rng.uniform(0.13, 0.24)
        # Polygons get a larger circumradius: about the disc's area at the same ``radius``.
        outline = _regular_polygon(corners, radius * (1 + 0.6 / corners), rng.uniform(0, 6.3)) \
            if corners else _ellipse_points(0.0, 0.0, radius, radius)
        low, high = outline.min(axis=0), outline.max(axis=0)
        spot = placer.place(*(high - low))
        if spot is None:
            continue
        shape = _polygon(outline - low + spot)
        ys, xs = np.nonzero(shape_mask(shape, height, width))
        colour = _hsv(hue + rng.uniform(-0.06, 0.06), rng.uniform(0.55, 0.9),
                      rng.uniform(0.6, 0.95))
        # Light from the top left: a shading ramp, so no object is one flat colour.
        ramp = ((xs - xs.min()) + (ys - ys.min())) / max(1, np.ptp(xs) + np.ptp(ys))
        image[ys, xs] = colour * (1.1 - 0.3 * ramp)[:, None]
        objects.append(SyntheticObject(label, [shape]))
    return SyntheticScene(_finish(image, rng), objects)


_RENDERERS: dict[str, Callable[[np.random.Generator, int, int], SyntheticScene]] = {
    "balloons": _render_balloons,
    "chipsets": _render_chipsets,
    "carvana": _render_carvana,
    "shapes": _render_shapes,
}


def _check_size(size: Size) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ConfigError(
            f"synthetic image size {height}x{width} is too small; fix: use a size of at least "
            f"{MIN_IMAGE_SIDE} pixels per side (e.g. --size 128 128)"
        )
    return height, width


def render_scene(
    kind: str, *, seed: int = 0, index: int = 0, size: Size = (128, 128)
) -> SyntheticScene:
    """Image ``index`` of the ``kind`` dataset made with ``seed``, as a :class:`SyntheticScene`."""
    if kind not in _RENDERERS:
        raise ConfigError(
            f"unknown synthetic dataset {kind!r}; fix: use one of {sorted(_RENDERERS)}"
        )
    height, width = _check_size(size)
    return _RENDERERS[kind](np.random.default_rng([seed, index]), height, width)


def render_sample(kind: str, *, seed: int = 0, size: Size = (128, 128), index: int = 0) -> dict:
    """One synthetic image with its instances, in memory (for model tests).

    Returns a dict with:
        "image": uint8 H×W×3 RGB.
        "masks": bool N×H×W, one mask per instance (groups of shapes already merged).
        "classes": list of N ints, 0-based indices into ``SYNTHETIC_CLASSES[kind]``
            (Detectron2's contiguous ``category_id``).
        "labels": list of N class names.
    It is image ``index`` of ``make_<kind>(..., size=size, seed=seed)``, pixel for pixel
    before JPEG compression.
    """
    scene = render_scene(kind, seed=seed, index=index, size=size)
    height, width = scene.image.shape[:2]
    masks = np.stack([object_mask(o, height, width) for o in scene.objects]) if scene.objects \
        else np.zeros((0, height, width), dtype=bool)
    labels = [o.label for o in scene.objects]
    return {
        "image": scene.image,
        "masks": masks,
        "classes": [SYNTHETIC_CLASSES[kind].index(label) for label in labels],
        "labels": labels,
    }


def labelme_dict(scene: SyntheticScene, image_path: str) -> dict:
    """The Labelme 5.x JSON of a scene; objects of several shapes share a ``group_id``."""
    shapes = []
    group_id = 0
    for obj in scene.objects:
        if len(obj.shapes) > 1:
            group_id += 1
        for shape in obj.shapes:
            shapes.append({
                "label": obj.label,
                "points": shape.points,
                "group_id": group_id if len(obj.shapes) > 1 else None,
                "description": "",
                "shape_type": shape.shape_type,
                "flags": {},
            })
    height, width = scene.image.shape[:2]
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }


def _make_dataset(kind: str, out_dir: str | Path, num_images: int, size: Size, seed: int,
                  write_item: Callable[[Path, str, SyntheticScene], None], *,
                  labels_txt: bool) -> Path:
    """Render and write ``num_images`` items into a temp folder that then becomes ``out_dir``."""
    out_dir = Path(out_dir)
    if num_images < 1:
        raise ConfigError(f"--num-images is {num_images}; fix: ask for at least 1 image")
    _check_size(size)
    prefix = kind.rstrip("s")
    with atomic_directory(out_dir) as tmp:
        for index in range(num_images):
            scene = render_scene(kind, seed=seed, index=index, size=size)
            write_item(tmp, f"{prefix}_{index:04d}", scene)
        if labels_txt:
            labels = [*RESERVED_LABELS, *SYNTHETIC_CLASSES[kind]]  # labelme's labels.txt
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return out_dir


def _write_labelme_item(folder: Path, stem: str, scene: SyntheticScene) -> None:
    Image.fromarray(scene.image).save(folder / f"{stem}.jpg", quality=JPEG_QUALITY)
    with open(folder / f"{stem}.json", "w", encoding="utf-8") as f:
        # Labelme's own layout: 2-space indent, UTF-8 kept as is.
        json.dump(labelme_dict(scene, f"{stem}.jpg"), f, ensure_ascii=False, indent=2)


def _write_carvana_item(folder: Path, stem: str, scene: SyntheticScene) -> None:
    height, width = scene.image.shape[:2]
    Image.fromarray(scene.image).save(folder / f"{stem}.jpg", quality=JPEG_QUALITY)
    mask = Image.fromarray(object_mask(scene.objects[0], height, width).astype(np.uint8), mode="L")
    gif = mask.convert("P")
    gif.putpalette([0, 0, 0, 255, 255, 255])
    # optimize=False keeps palette indices as they are: 0 = background, 1 = car.
    gif.save(folder / f"{stem}_mask.gif", optimize=False)


def make_balloons(out_dir: str | Path, num_images: int, *, size: Size = (128, 128),
                  seed: int = 0) -> Path:
    """Write a Labelme balloon set: ``balloon_NNNN.{jpg,json}`` and ``labels.txt``.

    ``size`` is (height, width) in pixels. ``out_dir`` must not exist; it appears complete or
    not at all. Returns ``out_dir``.
    """
    return _make_dataset("balloons", out_dir, num_images, size, seed, _write_labelme_item,
                         labels_txt=True)


def make_chipsets(out_dir: str | Path, num_images: int, *, size: Size = (128, 128),
                  seed: int = 0) -> Path:
    """Write a Labelme PCB set (chip, capacitor, resistor): ``chipset_NNNN.{jpg,json}``.

    Occluded chips are two polygons with one ``group_id``; resistors are ``rectangle`` shapes.
    Also writes ``labels.txt``. ``size`` is (height, width). Returns ``out_dir``.
    """
    return _make_dataset("chipsets", out_dir, num_images, size, seed, _write_labelme_item,
                         labels_txt=True)


def make_carvana(out_dir: str | Path, num_images: int, *, size: Size = (128, 192),
                 seed: int = 0) -> Path:
    """Write a Carvana-style set: ``carvana_NNNN.jpg`` + ``carvana_NNNN_mask.gif`` (palette, 0/1).

    ``size`` is (height, width). Returns ``out_dir``.
    """
    return _make_dataset("carvana", out_dir, num_images, size, seed, _write_carvana_item,
                         labels_txt=False)


def make_shapes(out_dir: str | Path, num_images: int, *, size: Size = (128, 128),
                seed: int = 0) -> Path:
    """Write a Labelme set of discs, squares and triangles: ``shape_NNNN.{jpg,json}`` and
    ``labels.txt``. ``size`` is (height, width) in pixels. Returns ``out_dir``.
    """
    return _make_dataset("shapes", out_dir, num_images, size, seed, _write_labelme_item,
                         labels_txt=True)


SYNTHETIC_DATASETS: dict[str, Callable[..., Path]] = {
    "balloons": make_balloons,
    "chipsets": make_chipsets,
    "carvana": make_carvana,
    "shapes": make_shapes,
}
