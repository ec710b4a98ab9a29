"""DatasetMapper: one Detectron2 dataset dict → one model input (image tensor + targets)."""

import copy
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from d2seg.config import CfgNode, configurable
from d2seg.data import detection_utils as utils
from d2seg.data.io import read_image, read_panoptic_ids, read_sem_seg
from d2seg.data.transforms import build_transforms
from d2seg.errors import DatasetError
from d2seg.modeling.meta_arch.declarations import model_tasks

# A box narrower or lower than this (pixels) after augmentation is empty (Detectron2's value).
_EMPTY_BOX_SIDE = 1e-5


class DatasetMapper:
    """Read a dict's image (and, in training, its targets), augment them together, return tensors.

    Output (a new dict; the dataset dict is never modified): the input's keys except
    ``annotations``, plus

    * ``"image"``: uint8 C×H×W tensor in ``image_format`` after augmentation (float32 for
      ``"N"`` rasters of other dtypes, see :func:`~d2seg.data.io.read_raster`);
    * ``"height"``, ``"width"``: the ORIGINAL image size (models resize their outputs to it);
    * training only: ``"instances"`` = ``{"boxes": float32 N×4 XYXY in the augmented image's
      pixels, "classes": int64 N, "masks": uint8 N×H×W}`` (from ``annotations`` or from a panoptic
      PNG's thing segments; crowd regions dropped, instances whose box became empty removed) and
      ``"sem_seg"``: int64 H×W class ids (255 = ignore), from ``sem_seg_file_name`` or a panoptic
      PNG.

    Semantic labels from a panoptic PNG follow PanopticFPN (things 0, background 1, stuff 2..;
    see :func:`~d2seg.data.detection_utils.panoptic_to_targets`). With ``panoptic_semantic``
    (models whose tasks include ``panoptic_seg``, e.g. PanopticUNet) they are used even where the dict also has a ``sem_seg_file_name`` (the
    converter writes both), whose ``ignore_value`` pixels then stay void; otherwise the semantic
    PNG's per-category labels win.

    Built from a config as in Detectron2: ``DatasetMapper(cfg, is_train=False)`` (see
    :func:`~d2seg.config.configurable`), or from the keyword arguments below.
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: v2.Transform,
        image_format: str,
        num_channels: int | None = None,
        recompute_boxes: bool = False,
        ignore_value: int = 255,
        panoptic_semantic: bool = False,
    ) -> None:
        """
        Args:
            is_train: build targets (training) or only the image (inference).
            augmentations: applied to the image, boxes, masks and labels together.
            image_format: ``INPUT.FORMAT`` ("BGR", "RGB", "L", "N").
            num_channels: channels every image must have (``len(MODEL.PIXEL_MEAN)``), or None.
            recompute_boxes: replace boxes by the tight boxes of the augmented masks (Detectron2
                does this when cropping, because a cropped box no longer bounds its object).
            ignore_value: the "ignore" label of semantic PNGs.
            panoptic_semantic: semantic targets from the panoptic PNG when a dict has one
                (PanopticFPN labels, what ``PanopticUNet`` trains on).
        """
        self.is_train = is_train
        self.augmentations = augmentations
        self.image_format = image_format
        self.num_channels = num_channels
        self.recompute_boxes = recompute_boxes
        self.ignore_value = ignore_value
        self.panoptic_semantic = panoptic_semantic

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> dict[str, Any]:
        return {
            "is_train": is_train,
            "augmentations": build_transforms(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_channels": len(cfg.MODEL.PIXEL_MEAN),
            "recompute_boxes": is_train and cfg.INPUT.CROP.ENABLED,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "panoptic_semantic": "panoptic_seg" in model_tasks(cfg),
        }

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict (see :func:`d2seg.data.coco.coco_dataset_dicts`) to one model
        input."""
        file_name = dataset_dict["file_name"]
        image = read_image(file_name, self.image_format)
        utils.check_image_size(dataset_dict, image)
        if self.num_channels is not None and image.shape[2] != self.num_channels:
            raise DatasetError(
                f"image {file_name} has {image.shape[2]} channel(s) but MODEL.PIXEL_MEAN has "
                f"{self.num_channels} values; fix: give one PIXEL_MEAN/PIXEL_STD value per "
                f"channel, or convert the image"
            )
        return self.map_image(image, dataset_dict)

    def map_image(self, image: np.ndarray, dataset_dict: dict | None = None) -> dict:
        """Map an image already read (H×W×C uint8, or a float32 raster, in ``image_format``):
        what :meth:`__call__` does after reading ``dataset_dict["file_name"]``, and what
        :class:`~d2seg.engine.predictor.DefaultPredictor` does with an image in memory
        (``dataset_dict`` None: no other keys, no targets)."""
        dataset_dict = dataset_dict or {}
        height, width = image.shape[:2]
        output = copy.deepcopy({k: v for k, v in dataset_dict.items() if k != "annotations"})
        output.setdefault("height", height)
        output.setdefault("width", width)

        chw = torch.from_numpy(image).permute(2, 0, 1)
        inputs: dict[str, Any] = {"image": tv_tensors.Image(chw)}
        if self.is_train:
            inputs.update(self._targets(dataset_dict, height, width))
        augmented = self.augmentations(inputs)
        output["image"] = augmented["image"].as_subclass(torch.Tensor).contiguous()
        if "sem_seg" in augmented:
            output["sem_seg"] = augmented["sem_seg"].as_subclass(torch.Tensor)[0].long()
        if "classes" in augmented:
            output["instances"] = self._instances(augmented)
        return output

    def _targets(self, dataset_dict: dict, height: int, width: int) -> dict[str, Any]:
        """Targets at the original size as tv_tensors, so the augmentations transform them."""
        instances, sem_seg = None, None
        pan_seg_file = dataset_dict.get("pan_seg_file_name")
        if pan_seg_file is not None:
            segment_ids = read_panoptic_ids(pan_seg_file)
            _check_same_size(pan_seg_file, segment_ids.shape, dataset_dict, height, width)
            instances, sem_seg = utils.panoptic_to_targets(
                segment_ids, dataset_dict.get("segments_info", [])
            )
        if "annotations" in dataset_dict:
            instances = utils.annotations_to_instances(
                dataset_dict["annotations"], height, width, dataset_dict["file_name"]
            )
        sem_seg_file = dataset_dict.get("sem_seg_file_name")
        if sem_seg_file is not None and pan_seg_file is None and self.panoptic_semantic:
            raise DatasetError(
                f"{dataset_dict['file_name']}: a panoptic model needs panoptic labels and this "
                f"dataset has semantic ones only (its classes are not the panoptic model's "
                f"things/stuff labels); fix: give the panoptic json in DATASETS.TRAIN/TEST (for "
                f"a converted folder with stuff classes: OUT/panoptic/<split>.json)"
            )
        if sem_seg_file is not None:
            labels = read_sem_seg(sem_seg_file)
            _check_same_size(sem_seg_file, labels.shape, dataset_dict, height, width)
            if sem_seg is not None and self.panoptic_semantic:
                # The panoptic PNG's void is background and ignore alike; the semantic PNG
                # tells them apart.
                sem_seg[labels == self.ignore_value] = self.ignore_value
            else:
                sem_seg = labels

        targets: dict[str, Any] = {}
        if sem_seg is not None:
            targets["sem_seg"] = tv_tensors.Mask(torch.from_numpy(sem_seg)[None])
        if instances is not None:
            targets["classes"] = instances["classes"]
            targets["boxes"] = tv_tensors.BoundingBoxes(
                instances["boxes"], format="XYXY", canvas_size=(height, width)
            )
            if "masks" in instances:
                targets["masks"] = tv_tensors.Mask(instances["masks"])
        return targets

    def _instances(self, augmented: dict[str, Any]) -> dict[str, torch.Tensor]:
        instances = {
            "boxes": augmented["boxes"].as_subclass(torch.Tensor).float(),
            "classes": augmented["classes"],
        }
        if "masks" in augmented:
            instances["masks"] = augmented["masks"].as_subclass(torch.Tensor).contiguous()
            if self.recompute_boxes:
                instances["boxes"] = utils.boxes_from_masks(instances["masks"])
        boxes = instances["boxes"]
        nonempty = (boxes[:, 2] - boxes[:, 0] > _EMPTY_BOX_SIDE) & (
            boxes[:, 3] - boxes[:, 1] > _EMPTY_BOX_SIDE
        )
        return {k: v[nonempty] for k, v in instances.items()}


def _check_same_size(
    label_file: str, shape: tuple[int, ...], dataset_dict: dict, height: int, width: int
) -> None:
    if tuple(shape[:2]) != (height, width):
        raise DatasetError(
            f"label image {label_file} is {shape[0]}×{shape[1]} (H×W) but its image "
            f"{dataset_dict['file_name']} "
            f"is {height}×{width}; fix: regenerate the label image from the annotations at the "
            f"image's size"
        )
