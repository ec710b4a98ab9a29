"""Tiled instance inference on shared feature maps (``TiledPredictor(mode="features")``).

Tiling by pixels ("images" mode) runs the whole model on every tile, so the backbone computes
the overlap of neighbouring tiles again and again (about 1 / (1 - overlap)² of the image:
1.8× at 0.25, 4× at 0.5), and it is most of the model's time. Here the backbone (+FPN) runs
once per *block* of the image (the whole image, unless it is more than ``block`` model pixels a
side: then in blocks of at most that, so memory stays bounded) and the RPN and RoI heads run
per tile window on crops of those feature maps, with the same per-tile proposal and detection
limits as a tile of its own. The windows start on multiples of the largest feature stride
(64 px for an FPN with p6), so every window's crop of every level is exact, and the RoI heads
pool each window's boxes from exactly that crop.

The image is first brought to the scale the predictor's test-time resize gives a
``tile``×``tile`` image (1 when the tile is the test size), so the model sees objects at the
size a tile of images mode shows them. A window's features near its border see the pixels
beyond it (images mode sees zero padding there), so the two modes agree exactly only where a
window is the whole image; elsewhere the detections differ little (the bench measures how
much, on a trained model).

Only for :class:`~d2seg.modeling.meta_arch.rcnn.GeneralizedRCNN` models (Mask/Faster
R-CNN, Cascade, PointRend): semantic and panoptic models have no per-window heads to split off.
"""

import math
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.image_list import ImageList
from torchvision.transforms.v2 import functional as TF

from d2seg.engine.tile_layout import tile_windows
from d2seg.errors import ConfigError
from d2seg.modeling.meta_arch.rcnn import GeneralizedRCNN
from d2seg.modeling.poolers import ROIPooler
from d2seg.modeling.postprocess import detector_postprocess

Window = tuple[int, int, int, int]


def supports_shared_features(model: Any) -> bool:
    """Whether ``model`` has a backbone and per-image detection heads to split (R-CNN)."""
    return isinstance(model, GeneralizedRCNN)


def _groups(starts: list[int], side: int, block: int) -> list[list[int]]:
    """Consecutive window starts (one axis) in groups whose windows span ≤ ``block`` pixels
    (one window per group at least)."""
    groups = [[starts[0]]]
    for start in starts[1:]:
        if start + side - groups[-1][0] <= block:
            groups[-1].append(start)
        else:
            groups.append([start])
    return groups


def block_layout(
    height: int, width: int, *, tile: int, overlap: float, align: int, block: int
) -> list[tuple[Window, list[Window]]]:
    """Blocks and their windows on an H×W image (model pixels).

    The image is padded up to a multiple of ``align``; the windows are ``tile`` rounded up to a
    multiple of ``align`` (smaller only where the padded image is), starting on multiples of
    ``align``; each block ``(y0, x0, y1, x1)`` is the union of a rectangle of windows, at most
    ``block`` pixels a side unless one window is larger. Returns ``[(block, windows), ...]``.
    """
    padded_h, padded_w = (math.ceil(size / align) * align for size in (height, width))
    side = math.ceil(tile / align) * align
    windows = tile_windows(padded_h, padded_w, side, overlap, align=align)
    win_h, win_w = windows[0][2] - windows[0][0], windows[0][3] - windows[0][1]
    rows = _groups(sorted({w[0] for w in windows}), win_h, block)
    cols = _groups(sorted({w[1] for w in windows}), win_w, block)
    return [
        ((ys[0], xs[0], ys[-1] + win_h, xs[-1] + win_w),
         [(y, x, y + win_h, x + win_w) for y in ys for x in xs])
        for ys in rows for xs in cols
    ]


class SharedFeatureDetector:
    """Per-window instances of one image from shared feature maps (see the module docstring).

    Call it on an H×W×C image (``format`` as the predictor's) to iterate over
    ``(instances, y0, x0)``: each window's ``{"boxes", "scores", "classes", "masks"?}`` at the
    window's size in image pixels (the masks as
    :class:`~d2seg.utils.cropped_masks.CroppedMasks` of their boxes), and the window's top-left
    corner in the image.
    """

    def __init__(self, predictor: Any, *, tile: int, overlap: float, block: int,
                 batch_size: int):
        """
        Args:
            predictor: a ``DefaultPredictor`` of a :func:`supports_shared_features` model.
            tile, overlap: the tile side (pixels of the original image) and overlap fraction.
            block: the largest side (model pixels) the backbone sees in one pass.
            batch_size: windows per RPN/RoI-heads pass.
        """
        model = predictor.model
        if not supports_shared_features(model):
            raise ConfigError(
                f"--tile-mode features needs an R-CNN model (GeneralizedRCNN), got "
                f"{type(model).__name__}; fix: use --tile-mode images"
            )
        backbone = model.backbone
        self.strides = {name: s.stride for name, s in backbone.output_shape().items()}
        self.align = max([*self.strides.values(), backbone.size_divisibility])
        if block < self.align:
            raise ConfigError(f"--tile-block {block}: fix: at least {self.align} pixels")
        self.predictor, self.model = predictor, model
        self.poolers = [m for m in model.modules() if isinstance(m, ROIPooler)]
        # The scale the test-time resize gives a tile: the tile's side after the mapper.
        dummy = np.zeros((tile, tile, predictor.num_channels), np.uint8)
        self.scale = predictor.mapper.map_image(dummy)["image"].shape[-1] / tile
        self.tile = max(1, round(tile * self.scale))
        self.overlap, self.block, self.batch_size = overlap, block, max(1, batch_size)

    def __call__(self, image: np.ndarray, format: str | None = None
                 ) -> Iterator[tuple[dict[str, torch.Tensor], int, int]]:
        height, width = image.shape[:2]
        scaled = (round(height * self.scale), round(width * self.scale))
        layout = block_layout(*scaled, tile=self.tile, overlap=self.overlap, align=self.align,
                              block=self.block)
        with torch.inference_mode():
            for block, windows in layout:
                yield from self._block(image, format, scaled, block, windows)

    def _block(self, image: np.ndarray, format: str | None, scaled: tuple[int, int],
               block: Window, windows: list[Window]
               ) -> Iterator[tuple[dict[str, torch.Tensor], int, int]]:
        """One backbone pass over ``block`` (model pixels), then the heads per window."""
        height, width = image.shape[:2]
        by0, bx0, by1, bx1 = block
        # The block's part inside the image, in model pixels and in image pixels.
        vy1, vx1 = min(by1, scaled[0]), min(bx1, scaled[1])
        oy0, ox0 = round(by0 / self.scale), round(bx0 / self.scale)
        oy1 = height if vy1 == scaled[0] else round(vy1 / self.scale)
        ox1 = width if vx1 == scaled[1] else round(vx1 / self.scale)
        pixels = self.predictor.to_model_format(image[oy0:oy1, ox0:ox1], format)
        chw = torch.from_numpy(pixels).permute(2, 0, 1)
        if (oy1 - oy0, ox1 - ox0) != (vy1 - by0, vx1 - bx0):
            chw = TF.resize(chw, [vy1 - by0, vx1 - bx0], antialias=True)
        tensors = self.model.preprocessor([{"image": chw}]).tensors
        tensors = F.pad(tensors, (0, bx1 - bx0 - tensors.shape[-1],
                                  0, by1 - by0 - tensors.shape[-2]))
        features = self.model.backbone_features(tensors)  # as the model's own forward
        strides = self.strides
        # Image pixels per model pixel along each axis, inside this block.
        ry, rx = (oy1 - oy0) / (vy1 - by0), (ox1 - ox0) / (vx1 - bx0)
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            crops = {
                name: torch.cat([feature[:, :, (y0 - by0) // strides[name]:
                                          (y1 - by0) // strides[name],
                                          (x0 - bx0) // strides[name]:
                                          (x1 - bx0) // strides[name]] for y0, x0, y1, x1 in batch])
                for name, feature in features.items()
            }
            sizes = [(min(y1, vy1) - y0, min(x1, vx1) - x0) for y0, x0, y1, x1 in batch]
            win_h, win_w = batch[0][2] - batch[0][0], batch[0][3] - batch[0][1]
            # The RPN's anchors read only the padded batch's shape, dtype and device.
            shape_only = tensors.new_zeros(()).expand(len(batch), tensors.shape[1], win_h, win_w)
            for pooler in self.poolers:
                pooler.setup_scales(crops, [(win_h, win_w)])
            detections, _ = self.model.detect(ImageList(shape_only, sizes), crops, None)
            for detection, (y0, x0, _, _), size in zip(detections, batch, sizes):
                top = oy0 + round((y0 - by0) * ry)
                left = ox0 + round((x0 - bx0) * rx)
                out_h = min(height, oy0 + round((y0 - by0 + size[0]) * ry)) - top
                out_w = min(width, ox0 + round((x0 - bx0 + size[1]) * rx)) - left
                # Masks as crops of their boxes: no window-sized mask per detection.
                yield (detector_postprocess(detection, size, out_h, out_w, cropped_masks=True),
                       top, left)
