"""GeneralizedRCNN: Faster/Mask R-CNN/PointRend composed of torchvision's detection parts.

backbone (ResNet+FPN) → torchvision ``RegionProposalNetwork`` → :class:`MaskRoIHeads` (torchvision
box head + the mask head named by ``MODEL.ROI_MASK_HEAD.NAME``; none when ``MODEL.MASK_ON`` is
false). Configured by Detectron2's keys; ``ROI_HEADS.NUM_CLASSES`` counts foreground classes and
torchvision's labels are ``classes + 1``.

Images are normalised and padded here but never resized: resizing to ``INPUT.MIN_SIZE_*`` is the
data mapper's job, as in Detectron2. Predictions are mapped back to each input's
``height``×``width``.
"""

from typing import Any, Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from d2seg.config import CfgNode
from d2seg.errors import ConfigError, DatasetError
from d2seg.modeling.backbone import Backbone, build_backbone
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.backbone.resnet import map_resnet_checkpoint
from d2seg.modeling.build import build_from_registry
from d2seg.modeling.postprocess import detector_postprocess
from d2seg.modeling.preprocess import ImagePreprocessor
from d2seg.modeling.registry import META_ARCH_REGISTRY, ROI_MASK_HEAD_REGISTRY
from d2seg.modeling.roi_heads import MaskRoIHeads
from d2seg.modeling.shape_spec import ShapeSpec
from d2seg.modeling.torchvision_keys import map_torchvision_maskrcnn_keys

# Detectron2's loss names for torchvision's.
_LOSS_NAMES = {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_loc"}


def build_rpn(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> RegionProposalNetwork:
    """torchvision RPN from ``MODEL.ANCHOR_GENERATOR.*`` and ``MODEL.RPN.*``."""
    rpn = cfg.MODEL.RPN
    check_in_features("MODEL.RPN.IN_FEATURES", rpn.IN_FEATURES, input_shape)
    sizes = [tuple(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(r) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS]
    if len(ratios) == 1:
        ratios = ratios * len(sizes)
    if len(sizes) != len(rpn.IN_FEATURES) or len(ratios) != len(sizes):
        raise ConfigError(
            f"MODEL.ANCHOR_GENERATOR.SIZES has {len(sizes)} entries and ASPECT_RATIOS "
            f"{len(ratios)}, but MODEL.RPN.IN_FEATURES has {len(rpn.IN_FEATURES)} maps; fix: give "
            "one list of sizes per feature map (and one list of ratios, or one per map)"
        )
    anchors_per_cell = {len(s) * len(r) for s, r in zip(sizes, ratios)}
    if len(anchors_per_cell) != 1:
        raise ConfigError(
            "MODEL.ANCHOR_GENERATOR: every feature map must have the same number of anchors "
            "(sizes × aspect ratios), since one RPN head is shared; fix: equalise the lists"
        )
    in_channels = {input_shape[f].channels for f in rpn.IN_FEATURES}
    if len(in_channels) != 1:
        raise ConfigError(
            f"MODEL.RPN.IN_FEATURES {list(rpn.IN_FEATURES)} have different channel counts; fix: "
            "use FPN levels (p2..p6), which share MODEL.FPN.OUT_CHANNELS"
        )
    bg_iou, fg_iou = min(rpn.IOU_THRESHOLDS), max(rpn.IOU_THRESHOLDS)
    return RegionProposalNetwork(
        AnchorGenerator(tuple(sizes), tuple(ratios)),
        RPNHead(in_channels.pop(), anchors_per_cell.pop()),
        fg_iou_thresh=fg_iou,
        bg_iou_thresh=bg_iou,
        batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn.POSITIVE_FRACTION,
        pre_nms_top_n={"training": rpn.PRE_NMS_TOPK_TRAIN, "testing": rpn.PRE_NMS_TOPK_TEST},
        post_nms_top_n={"training": rpn.POST_NMS_TOPK_TRAIN, "testing": rpn.POST_NMS_TOPK_TEST},
        nms_thresh=rpn.NMS_THRESH,
    )


def build_roi_heads(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> MaskRoIHeads:
    """Box head (``ROI_BOX_HEAD``/``ROI_HEADS``) + mask head (``ROI_MASK_HEAD``, if MASK_ON)."""
    heads, box = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    for key, value, supported in (
        ("MODEL.ROI_HEADS.NAME", heads.NAME, "StandardROIHeads"),
        ("MODEL.ROI_BOX_HEAD.NAME", box.NAME, "FastRCNNConvFCHead"),
    ):
        if value != supported:
            raise ConfigError(f"{key} = {value!r} is not supported; fix: use {supported!r}")
    check_in_features("MODEL.ROI_HEADS.IN_FEATURES", heads.IN_FEATURES, input_shape)
    channels = input_shape[heads.IN_FEATURES[0]].channels
    resolution = box.POOLER_RESOLUTION
    box_head = FastRCNNConvFCHead((channels, resolution, resolution), [], [box.FC_DIM] * box.NUM_FC)
    representation = box.FC_DIM if box.NUM_FC else channels * resolution * resolution
    mask_head = None
    if cfg.MODEL.MASK_ON:
        import d2seg.modeling.heads  # noqa: F401  (registers the mask heads)

        mask_head = build_from_registry(
            ROI_MASK_HEAD_REGISTRY, "MODEL.ROI_MASK_HEAD.NAME", cfg, input_shape
        )
    return MaskRoIHeads(
        mask_head=mask_head,
        box_roi_pool=MultiScaleRoIAlign(
            list(heads.IN_FEATURES), resolution, box.POOLER_SAMPLING_RATIO
        ),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation, heads.NUM_CLASSES + 1),
        fg_iou_thresh=max(heads.IOU_THRESHOLDS),
        bg_iou_thresh=min(heads.IOU_THRESHOLDS),
        batch_size_per_image=heads.BATCH_SIZE_PER_IMAGE,
        positive_fraction=heads.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(box.BBOX_REG_WEIGHTS),
        score_thresh=heads.SCORE_THRESH_TEST,
        nms_thresh=heads.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
    )


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    """Two-stage instance segmentation (Mask R-CNN; PointRend with its mask head).

    ``forward(batched_inputs)``, each input ``{"image": uint8 C×H×W in INPUT.FORMAT, "height",
    "width", "instances": {"boxes": N×4 XYXY image-tensor pixels, "classes": N long 0..K-1,
    "masks": N×H×W uint8}}`` (instances needed in training only; N may be 0):

    * training → ``{"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"
      (MASK_ON), "loss_mask_point" (PointRend)}``;
    * inference → per image ``{"instances": {"boxes": R×4, "scores": R, "classes": R long,
      "masks": R×height×width bool (MASK_ON)}}`` on the input image's device.

    Example::

        import torch
        from d2seg import build_model, get_cfg

        cfg = get_cfg()
        cfg.merge_from_file("configs/tiny/mask_rcnn_R_18_tiny.yaml")
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        with torch.no_grad():
            instances = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])[0]["instances"]
    """

    tasks = ("instances",)

    @classmethod
    def headline_metric(cls, cfg: CfgNode) -> str:
        return "segm/AP" if cfg.MODEL.MASK_ON else "bbox/AP"

    @classmethod
    def class_counts(cls, cfg: CfgNode, metadata: dict[str, Any]) -> dict[str, int | None]:
        things = metadata.get("thing_classes")
        return {"MODEL.ROI_HEADS.NUM_CLASSES": None if things is None else len(things)}

    def __init__(
        self,
        *,
        backbone: Backbone,
        rpn: RegionProposalNetwork,
        roi_heads: MaskRoIHeads,
        rpn_in_features: list[str],
        preprocessor: ImagePreprocessor,
        num_classes: int,
    ):
        """
        Args:
            backbone: ResNet + FPN (``output_shape()`` names the RPN and RoI features).
            rpn: torchvision's region proposal network (:func:`build_rpn`).
            roi_heads: box head and optional mask head (:func:`build_roi_heads`).
            rpn_in_features: the backbone features the RPN reads, e.g. p2..p6.
            preprocessor: normalisation and padding of the input images.
            num_classes: foreground classes (``MODEL.ROI_HEADS.NUM_CLASSES``); ground-truth
                classes must be 0..num_classes-1.
        """
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.rpn_in_features = rpn_in_features
        self.preprocessor = preprocessor

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        return {
            "backbone": backbone,
            "rpn": build_rpn(cfg, shapes),
            "roi_heads": build_roi_heads(cfg, shapes),
            "rpn_in_features": list(cfg.MODEL.RPN.IN_FEATURES),
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "preprocessor": ImagePreprocessor(
                **ImagePreprocessor.from_config(cfg, backbone.size_divisibility)
            ),
        }

    @property
    def device(self) -> torch.device:
        return self.preprocessor.pixel_mean.device

    def map_external_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Checkpointer hook: torchvision Mask R-CNN and ResNet files, and checkpoints with
        another input-channel count (RGB → gray), load into this model."""
        return map_resnet_checkpoint(map_torchvision_maskrcnn_keys(state_dict, self), self)

    def targets(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
        """Ground truth in torchvision's form: boxes, labels = classes + 1, masks."""
        num_classes = self.num_classes
        with_masks = self.roi_heads.mask_head is not None
        needed = ("boxes", "classes") + (("masks",) if with_masks else ())
        targets = []
        for i, x in enumerate(batched_inputs):
            instances = x.get("instances", {})
            missing = [k for k in needed if k not in instances]
            if missing:
                raise DatasetError(
                    f"training input {i} lacks instances {missing}; fix: train on a dataset with "
                    "instance annotations (masks are needed when MODEL.MASK_ON is true), mapped "
                    "by DatasetMapper"
                )
            classes = instances["classes"]
            if classes.numel() and not 0 <= int(classes.min()) <= int(classes.max()) < num_classes:
                raise DatasetError(
                    f"training input {i} has classes {sorted(set(classes.tolist()))} but "
                    f"MODEL.ROI_HEADS.NUM_CLASSES = {num_classes}; fix: set NUM_CLASSES to the "
                    "number of foreground categories (classes are contiguous 0..NUM_CLASSES-1)"
                )
            target = {
                "boxes": instances["boxes"].to(self.device, torch.float32).reshape(-1, 4),
                "labels": instances["classes"].to(self.device, torch.int64) + 1,
            }
            if with_masks:
                target["masks"] = instances["masks"].to(self.device)
            targets.append(target)
        return targets

    def detect(
        self,
        images: ImageList,
        features: dict[str, Tensor],
        targets: Optional[list[dict[str, Tensor]]],
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """RPN + RoI heads: (torchvision detections on the padded batch, losses)."""
        rpn_features = {f: features[f] for f in self.rpn_in_features}
        proposals, rpn_losses = self.rpn(images, rpn_features, targets)
        detections, roi_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        losses = {_LOSS_NAMES.get(k, k): v for k, v in {**rpn_losses, **roi_losses}.items()}
        return detections, losses

    def postprocess_instances(
        self,
        detections: list[dict[str, Tensor]],
        images: ImageList,
        batched_inputs: list[dict[str, Any]],
    ) -> list[dict[str, Tensor]]:
        """Detections → d2seg instances at each input's height×width, on its image's device."""
        results = []
        for detection, size, x in zip(detections, images.image_sizes, batched_inputs):
            height, width = x.get("height", size[0]), x.get("width", size[1])
            instances = detector_postprocess(detection, size, int(height), int(width))
            results.append({k: v.to(x["image"].device) for k, v in instances.items()})
        return results

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        images = self.preprocessor(batched_inputs)
        targets = self.targets(batched_inputs) if self.training else None
        detections, losses = self.detect(images, self.backbone(images.tensors), targets)
        if self.training:
            return losses
        instances = self.postprocess_instances(detections, images, batched_inputs)
        return [{"instances": i} for i in instances]
