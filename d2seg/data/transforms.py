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

import cv2
import numpy as np
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


class CategoryAreaCrop(RandomCrop):
    """Detectron2's ``RandomCrop_CategoryAreaConstraint`` (``INPUT.CROP.
    SINGLE_CATEGORY_MAX_AREA``): a :class:`RandomCrop` redrawn up to 10 times until at least two
    classes appear in it and none covers ``single_category_max_area`` or more of its labelled
    pixels (``ignore_value`` pixels do not count); after 10 misses the last draw stands. Reads
    the sample's ``"sem_seg"`` (1×H×W); a sample without one is cropped as by
    :class:`RandomCrop`.
    """

    attempts = 10

    def __init__(
        self,
        crop_type: str,
        crop_size: Sequence[float],
        single_category_max_area: float,
        ignore_value: int = 255,
    ) -> None:
        super().__init__(crop_type, crop_size)
        if not 0 < single_category_max_area <= 1:
            raise ConfigError(
                f"INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = {single_category_max_area}; fix: a share "
                "of the crop in (0, 1] (1.0 = no constraint)"
            )
        self.single_category_max_area = single_category_max_area
        self.ignore_value = ignore_value
        self._labels: torch.Tensor | None = None

    def forward(self, *inputs: Any) -> Any:
        # make_params sees bare tv_tensors, where the semantic labels and the instance masks are
        # both Masks: the labels are taken from the sample by name for the duration of the call.
        sample = inputs[0] if len(inputs) == 1 else None
        labels = sample.get("sem_seg") if isinstance(sample, dict) else None
        self._labels = None if labels is None else labels.as_subclass(torch.Tensor)[0]
        try:
            return super().forward(*inputs)
        finally:
            self._labels = None

    def _acceptable(self, params: dict[str, Any]) -> bool:
        top, left = params["top"], params["left"]
        crop = self._labels[top : top + params["height"], left : left + params["width"]]
        values, counts = crop.unique(return_counts=True)
        counts = counts[values != self.ignore_value]
        return len(counts) > 1 and int(counts.max()) < float(counts.sum()) * (
            self.single_category_max_area
        )

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        if self._labels is None:
            return params
        for _ in range(self.attempts - 1):
            if self._acceptable(params):
                break
            params = super().make_params(flat_inputs)
        return params


class ColorAugSSD(v2.Transform):
    """SSD's photometric distortions (Liu et al. 2016; Detectron2 PointRend's
    ``ColorAugSSDTransform``), ``INPUT.COLOR_AUG_SSD``, on a 3-channel uint8 image.

    Each step happens with probability 1/2: brightness + U(-32, 32); then contrast × U(0.5, 1.5),
    saturation × U(0.5, 1.5) and hue + U{-18..18} (OpenCV's 0-179 hue, wrapping), the contrast
    first or last at random. Values clip to 0-255 and truncate to integers after every step;
    saturation and hue are OpenCV's HSV of the image in BGR order. Targets are left alone.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, image_format: str) -> None:
        super().__init__()
        if image_format not in ("RGB", "BGR"):
            raise ConfigError(
                f"INPUT.COLOR_AUG_SSD True needs a 3-channel INPUT.FORMAT, not {image_format!r}; "
                "fix: set INPUT.COLOR_AUG_SSD False or INPUT.FORMAT 'RGB'/'BGR'"
            )
        self.image_format = image_format

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        applied = (torch.rand(4) < 0.5).tolist()
        uniform = torch.rand(3).tolist()
        return {
            "brightness": (uniform[0] * 64 - 32) if applied[0] else None,
            "contrast": (0.5 + uniform[1]) if applied[1] else None,
            "saturation": (0.5 + uniform[2]) if applied[2] else None,
            "hue": int(torch.randint(-18, 19, ())) if applied[3] else None,
            "contrast_first": bool(torch.rand(()) < 0.5),
        }

    @staticmethod
    def _scale(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        bgr = inpt.as_subclass(torch.Tensor).permute(1, 2, 0).numpy()
        if self.image_format == "RGB":
            bgr = bgr[:, :, ::-1]
        image = np.ascontiguousarray(bgr)
        if params["brightness"] is not None:
            image = self._scale(image, beta=params["brightness"])

        def contrast(img: np.ndarray) -> np.ndarray:
            return img if params["contrast"] is None else self._scale(img, alpha=params["contrast"])

        if params["contrast_first"]:
            image = contrast(image)
        if params["saturation"] is not None or params["hue"] is not None:
            hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
            if params["saturation"] is not None:
                hsv[:, :, 1] = self._scale(hsv[:, :, 1], alpha=params["saturation"])
            if params["hue"] is not None:
                hsv[:, :, 0] = ((hsv[:, :, 0].astype(int) + params["hue"]) % 180).astype(np.uint8)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if not params["contrast_first"]:
            image = contrast(image)
        if self.image_format == "RGB":
            image = image[:, :, ::-1]
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return tv_tensors.wrap(chw.contiguous(), like=inpt)


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
    MIN_SIZE_TRAIN_SAMPLING) → [ColorAugSSD if COLOR_AUG_SSD] → flip (RANDOM_FLIP) → colour
    jitter (COLOR_JITTER > 0). With ``CROP.SINGLE_CATEGORY_MAX_AREA`` < 1 the crop is a
    :class:`CategoryAreaCrop` after the resize instead, as in Detectron2's semantic training
    recipe (its DeepLab and PointRend ``train_net.py``, the only users of that key).
    Test: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST); MIN_SIZE_TEST 0 = no resize.
    """
    inp = cfg.INPUT
    if not is_train:
        return v2.Compose([ResizeShortestEdge((inp.MIN_SIZE_TEST,), inp.MAX_SIZE_TEST)])
    transforms: list[v2.Transform] = []
    constrained = inp.CROP.SINGLE_CATEGORY_MAX_AREA < 1.0
    if inp.CROP.ENABLED and not constrained:
        transforms.append(RandomCrop(inp.CROP.TYPE, inp.CROP.SIZE))
    transforms.append(
        ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING)
    )
    if inp.CROP.ENABLED and constrained:
        transforms.append(CategoryAreaCrop(
            inp.CROP.TYPE, inp.CROP.SIZE, inp.CROP.SINGLE_CATEGORY_MAX_AREA,
            cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        ))
    if inp.COLOR_AUG_SSD:
        transforms.append(ColorAugSSD(inp.FORMAT))
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
