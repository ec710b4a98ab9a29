"""Model input batching and output resizing shared by every meta-architecture.

In: ``batched_inputs`` as DESIGN §3.4, a list of dicts with ``"image"`` (uint8 C×H×W in
``INPUT.FORMAT``), optional ``"height"``/``"width"`` (the size predictions are returned at) and,
in training, ``"sem_seg"`` (long H×W). Out: one padded, normalised N×C×H'×W' float batch
(torchvision's ``ImageList``) and targets padded with the ignore label. (Resizing predictions
back to each input's height/width is :mod:`d2seg.modeling.postprocess`'s job.)
"""

import math
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from d2seg.config import CfgNode
from d2seg.errors import ConfigError, DatasetError


class ImagePreprocessor(nn.Module):
    """Normalise by ``PIXEL_MEAN``/``PIXEL_STD`` and zero-pad into one batch.

    Padding comes after normalisation, so padded pixels are 0 (the mean colour) and the batch
    height/width are the largest image's, rounded up to ``size_divisibility``. The mean/std are
    non-persistent buffers: they follow ``model.to(device)`` but are not saved in checkpoints.
    """

    def __init__(self, *, pixel_mean: list[float], pixel_std: list[float], size_divisibility: int):
        """
        Args:
            pixel_mean, pixel_std: one value per input channel, in 0-255 pixel units.
            size_divisibility: the batch height/width are multiples of this (0 or 1: no rounding).
        """
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ConfigError(
                f"MODEL.PIXEL_MEAN has {len(pixel_mean)} values but MODEL.PIXEL_STD has "
                f"{len(pixel_std)}; fix: give one mean and one std per input channel"
            )
        mean, std = torch.tensor(pixel_mean), torch.tensor(pixel_std)
        self.register_buffer("pixel_mean", mean.view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(-1, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg: CfgNode, size_divisibility: int) -> dict:
        return {
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "size_divisibility": size_divisibility,
        }

    def padded_size(self, image_sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """Batch (height, width) for images of ``image_sizes``: the max, rounded up."""
        divisor = max(self.size_divisibility, 1)
        height = max(h for h, _ in image_sizes)
        width = max(w for _, w in image_sizes)
        return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor

    def forward(self, batched_inputs: list[dict[str, Any]]) -> ImageList:
        """→ ``ImageList``: ``tensors`` N×C×H'×W' float on the buffers' device, ``image_sizes``
        the (height, width) of each image before padding."""
        channels = self.pixel_mean.shape[0]
        images = [x["image"] for x in batched_inputs]
        for image in images:
            if image.dim() != 3 or image.shape[0] != channels:
                raise ConfigError(
                    f"an input image has shape {tuple(image.shape)} but MODEL.PIXEL_MEAN has "
                    f"{channels} value(s), so the model expects {channels}×H×W images; fix: set "
                    f"INPUT.FORMAT and MODEL.PIXEL_MEAN/PIXEL_STD to the images' channels"
                )
        image_sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        height, width = self.padded_size(image_sizes)
        batch = self.pixel_mean.new_zeros((len(images), channels, height, width))
        for slot, image in zip(batch, images):
            # In place in the padded batch (copy_ converts dtype and device): the same values as
            # (float(image) - mean) / std, without two full-size temporaries per image.
            region = slot[:, : image.shape[1], : image.shape[2]]
            region.copy_(image).sub_(self.pixel_mean).div_(self.pixel_std)
        return ImageList(batch, image_sizes)


def pad_sem_seg_targets(
    batched_inputs: list[dict[str, Any]],
    padded_size: tuple[int, int],
    ignore_value: int,
    device: torch.device,
) -> Tensor:
    """Stack each input's ``"sem_seg"`` (long H×W) into N×H'×W', padded with ``ignore_value``."""
    shape = (len(batched_inputs), *padded_size)
    targets = torch.full(shape, ignore_value, dtype=torch.long, device=device)
    for i, x in enumerate(batched_inputs):
        if "sem_seg" not in x:
            raise DatasetError(
                f"training input {i} has no 'sem_seg'; fix: train a semantic model on a dataset "
                f"with sem_seg_file_name (register_coco_sem_seg / a converted sem_seg folder)"
            )
        sem_seg, image = x["sem_seg"], x["image"]
        if tuple(sem_seg.shape) != tuple(image.shape[1:]):
            raise DatasetError(
                f"training input {i}: 'sem_seg' is {tuple(sem_seg.shape)} but the image is "
                f"{tuple(image.shape[1:])}; fix: resize the label map with the image"
            )
        targets[i, : sem_seg.shape[0], : sem_seg.shape[1]] = sem_seg.to(device)
    return targets
