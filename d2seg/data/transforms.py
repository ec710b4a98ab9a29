"""Detectron2's training/test augmentations on torchvision transforms v2.

The transforms take ``tv_tensors``: an :class:`~torchvision.tv_tensors.Image` (C×H×W uint8), and
optionally :class:`~torchvision.tv_tensors.BoundingBoxes` (XYXY pixels) and
:class:`~torchvision.tv_tensors.Mask` (instance masks N×H×W, semantic labels 1×H×W), and
transform them together: images are resized bilinearly (antialiased, like Pillow), masks and
labels with nearest neighbour, boxes by the same scale/flip/crop.

All randomness comes from torch's global RNG (as torchvision's own transforms), so seeding a
DataLoader worker's torch RNG makes its augmentations reproducible.
"""

from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from d2seg.config import CfgNode
from d2seg.errors import ConfigError

SAMPLE_STYLES = ("choice", "range")
CROP_TYPES = ("relative_range", "relative", "absolute", "absolute_range")


def shortest_edge_output_size(
    height: int, width: int, short_edge: int, max_size: int
) -> tuple[int, int]:
    """Detectron2's ``ResizeShortestEdge.get_output_shape``: (new_height, new_width) in pixels.

    The shorter side becomes ``short_edge``, keeping the aspect ratio, unless the longer side
    would then exceed ``max_size``, in which case the longer side becomes ``max_size``.
    """
    scale = short_edge / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def _sample_index(n: int) -> int:
    return int(torch.randint(n, ()))


class ResizeShortestEdge(v2.Transform):
    """Resize so that the shorter side is a sampled length and the longer is at most ``max_size``.

    ``sample_style`` ``"choice"`` picks one of ``short_edge_length``; ``"range"`` draws an integer
    uniformly from ``[short_edge_length[0], short_edge_length[1]]``. A length of 0 leaves the
    input unchanged.
    """

    def __init__(
        self, short_edge_length: Sequence[int], max_size: int, sample_style: str = "choice"
    ) -> None:
        super().__init__()
        lengths = tuple(int(s) for s in short_edge_length)
        if sample_style not in SAMPLE_STYLES:
            raise ConfigError(
                f"INPUT.MIN_SIZE_TRAIN_SAMPLING = {sample_style!r}; fix: use one of {SAMPLE_STYLES}"
            )
        if not lengths or (sample_style == "range" and len(lengths) != 2):
            raise ConfigError(
                f"INPUT.MIN_SIZE_TRAIN = {lengths} with sampling {sample_style!r}; fix: give two "
                f"sizes (min, max) for 'range', or at least one size for 'choice'"
            )
        if any(s < 0 for s in lengths) or max_size <= 0:
            raise ConfigError(
                f"resize sizes must be positive pixels, got min sizes {lengths} and max size "
                f"{max_size}; fix: correct INPUT.MIN_SIZE_*/MAX_SIZE_*"
            )
        self.short_edge_length = lengths
        self.max_size = max_size
        self.sample_style = sample_style

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if len(self.short_edge_length) == 1:  # no draw: test-time resizing leaves the RNG alone
            short_edge = self.short_edge_length[0]
        elif self.sample_style == "range":
            low, high = self.short_edge_length
            short_edge = int(torch.randint(low, high + 1, ()))
        else:
            short_edge = self.short_edge_length[_sample_index(len(self.short_edge_length))]
        if short_edge == 0:
            return {"size": None}
        height, width = v2.query_size(flat_inputs)
        return {"size": list(shortest_edge_output_size(height, width, short_edge, self.max_size))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["size"] is None:
            return inpt
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


class RandomCrop(v2.Transform):
    """Detectron2's ``RandomCrop``: a crop of a random size (by ``crop_type``) at a random place.

    ``crop_size`` is (height, width): fractions of the image for ``"relative"`` (exactly that
    fraction) and ``"relative_range"`` (uniform in [size, 1]); pixels for ``"absolute"`` (at most
    the image) and ``"absolute_range"`` (an integer in [size[0], size[1]] per side). Boxes are
    clipped to the crop; a box outside it becomes empty.
    """

    def __init__(self, crop_type: str, crop_size: Sequence[float]) -> None:
        super().__init__()
        if crop_type not in CROP_TYPES:
            raise ConfigError(f"INPUT.CROP.TYPE = {crop_type!r}; fix: use one of {CROP_TYPES}")
        size = tuple(crop_size)
        relative = crop_type.startswith("relative")
        valid = len(size) == 2 and (
            all(0 < s <= 1 for s in size) if relative else all(s >= 1 for s in size)
        )
        if valid and crop_type == "absolute_range":
            valid = size[0] <= size[1]
        if not valid:
            rule = "two fractions in (0, 1]" if relative else "two pixel sizes >= 1"
            if crop_type == "absolute_range":
                rule += ", the first <= the second"
            raise ConfigError(
                f"INPUT.CROP.SIZE = {list(size)} is invalid for INPUT.CROP.TYPE {crop_type!r}; "
                f"fix: give {rule}"
            )
        self.crop_type = crop_type
        self.crop_size = size

    def _sample_crop_size(self, height: int, width: int) -> tuple[int, int]:
        if self.crop_type == "relative":
            fh, fw = self.crop_size
        elif self.crop_type == "relative_range":
            low = torch.tensor(self.crop_size, dtype=torch.float64)
            fh, fw = (low + torch.rand(2, dtype=torch.float64) * (1 - low)).tolist()
        elif self.crop_type == "absolute":
            return min(int(self.crop_size[0]), height), min(int(self.crop_size[1]), width)
        else:
            low, high = int(self.crop_size[0]), int(self.crop_size[1])
            crop_h = int(torch.randint(min(height, low), min(height, high) + 1, ()))
            crop_w = int(torch.randint(min(width, low), min(width, high) + 1, ()))
            return crop_h, crop_w
        return int(height * fh + 0.5), int(width * fw + 0.5)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        crop_h, crop_w = self._sample_crop_size(height, width)
        top = _sample_index(height - crop_h + 1)
        left = _sample_index(width - crop_w + 1)
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class ColorJitterInFormat(v2.ColorJitter):
    """Brightness/contrast/saturation jitter of a 3-channel image in ``"RGB"`` or ``"BGR"`` order.

    Saturation mixes each pixel with its luminance, whose weights assume RGB, so a BGR image is
    jittered in RGB order and turned back.
    """

    def __init__(self, strength: float, image_format: str) -> None:
        super().__init__(brightness=strength, contrast=strength, saturation=strength)
        self.image_format = image_format

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.image_format != "BGR" or not isinstance(inpt, tv_tensors.Image):
            return super().transform(inpt, params)
        jittered = super().transform(inpt.as_subclass(torch.Tensor).flip(-3), params)
        return tv_tensors.wrap(jittered.flip(-3), like=inpt)


def build_transforms(cfg: CfgNode, is_train: bool) -> v2.Compose:
    """Detectron2's ``build_augmentation`` (+ d2seg's colour jitter) from ``cfg.INPUT``.

    Training: [RandomCrop if CROP.ENABLED] → ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN,
    MIN_SIZE_TRAIN_SAMPLING) → flip (RANDOM_FLIP) → colour jitter (COLOR_JITTER > 0).
    Test: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST); MIN_SIZE_TEST 0 = no resize.
    """
    inp = cfg.INPUT
    if not is_train:
        return v2.Compose([ResizeShortestEdge((inp.MIN_SIZE_TEST,), inp.MAX_SIZE_TEST)])
    transforms: list[v2.Transform] = []
    if inp.CROP.ENABLED:
        transforms.append(RandomCrop(inp.CROP.TYPE, inp.CROP.SIZE))
    transforms.append(
        ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING)
    )
    if inp.RANDOM_FLIP == "horizontal":
        transforms.append(v2.RandomHorizontalFlip(p=0.5))
    elif inp.RANDOM_FLIP == "vertical":
        transforms.append(v2.RandomVerticalFlip(p=0.5))
    if inp.COLOR_JITTER > 0:
        if inp.FORMAT not in ("RGB", "BGR"):
            raise ConfigError(
                f"INPUT.COLOR_JITTER = {inp.COLOR_JITTER} needs a 3-channel INPUT.FORMAT, not "
                f"{inp.FORMAT!r}; fix: set INPUT.COLOR_JITTER 0.0 or INPUT.FORMAT 'RGB'/'BGR'"
            )
        transforms.append(ColorJitterInFormat(inp.COLOR_JITTER, inp.FORMAT))
    return v2.Compose(transforms)
