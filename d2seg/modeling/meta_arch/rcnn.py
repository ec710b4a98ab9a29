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
from torchvision.models.detection.image_list import ImageList

from d2seg.config import CfgNode
from d2seg.errors import ConfigError, DatasetError
from d2seg.modeling.backbone import Backbone, build_backbone
from d2seg.modeling.backbone.backbone import check_in_features
from d2seg.modeling.backbone.resnet import ResNet, map_resnet_checkpoint
from d2seg.modeling.batchnorm_folding import inference_module
from d2seg.modeling.box_head import BoxPredictor, box_head_output_size, build_box_head
from d2seg.modeling.build import build_from_registry
from d2seg.modeling.heads.mask_head import MaskRCNNConvUpsampleHead
from d2seg.modeling.poolers import ROIPooler
from d2seg.modeling.postprocess import detector_postprocess
from d2seg.modeling.preprocess import ImagePreprocessor
from d2seg.modeling.registry import META_ARCH_REGISTRY, ROI_MASK_HEAD_REGISTRY
from d2seg.modeling.roi_heads import CascadeROIHeads, MaskRoIHeads, Res5ROIHeads
from d2seg.modeling.rpn import RPN, build_rpn
from d2seg.modeling.shape_spec import ShapeSpec
from d2seg.modeling.torchvision_keys import map_torchvision_maskrcnn_keys

# Detectron2's loss names for torchvision's.
_LOSS_NAMES = {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_loc"}


def build_roi_heads(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> MaskRoIHeads:
    """``ROI_HEADS.NAME``: ``StandardROIHeads`` (box head ``ROI_BOX_HEAD`` on pooled features),
    ``CascadeROIHeads`` (one such box head per ``ROI_BOX_CASCADE_HEAD.IOUS`` stage) or
    ``Res5ROIHeads`` (C4: the res5 stage on pooled res4); mask head ``ROI_MASK_HEAD`` if
    MASK_ON."""
    heads, box = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    if heads.NAME not in ("StandardROIHeads", "CascadeROIHeads", "Res5ROIHeads"):
        raise ConfigError(
            f"MODEL.ROI_HEADS.NAME = {heads.NAME!r} is not registered; fix: use "
            "'StandardROIHeads', 'CascadeROIHeads' or 'Res5ROIHeads'"
        )
    check_in_features("MODEL.ROI_HEADS.IN_FEATURES", heads.IN_FEATURES, input_shape)
    channels = input_shape[heads.IN_FEATURES[0]].channels
    resolution = box.POOLER_RESOLUTION
    pooler = ROIPooler.from_pooler_type(
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE", box.POOLER_TYPE, list(heads.IN_FEATURES), resolution,
        box.POOLER_SAMPLING_RATIO,
    )
    common = dict(
        box_roi_pool=pooler,
        fg_iou_thresh=max(heads.IOU_THRESHOLDS),
        bg_iou_thresh=min(heads.IOU_THRESHOLDS),
        batch_size_per_image=heads.BATCH_SIZE_PER_IMAGE,
        positive_fraction=heads.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(box.BBOX_REG_WEIGHTS),
        score_thresh=heads.SCORE_THRESH_TEST,
        nms_thresh=heads.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        box_loss_type=box.BBOX_REG_LOSS_TYPE,
        smooth_l1_beta=box.SMOOTH_L1_BETA,
        box_loss_weight=box.BBOX_REG_LOSS_WEIGHT,
        train_on_pred_boxes=box.TRAIN_ON_PRED_BOXES,
    )
    import d2seg.modeling.heads  # noqa: F401  (registers the mask heads)

    if heads.NAME == "Res5ROIHeads":
        res5, res5_channels = build_res5_head(cfg, channels)
        mask_head = None
        if cfg.MODEL.MASK_ON:
            mask_head = MaskRCNNConvUpsampleHead(
                pooler=None, **MaskRCNNConvUpsampleHead.layers_from_config(cfg, res5_channels)
            )
        return Res5ROIHeads(
            res5=res5,
            mask_head=mask_head,
            box_predictor=BoxPredictor(
                res5_channels, heads.NUM_CLASSES + 1, class_agnostic=box.CLS_AGNOSTIC_BBOX_REG
            ),
            **common,
        )

    if box.NAME != "FastRCNNConvFCHead":
        raise ConfigError(
            f"MODEL.ROI_BOX_HEAD.NAME = {box.NAME!r} with {heads.NAME}; fix: use "
            "'FastRCNNConvFCHead'"
        )
    layers = (channels, resolution, box.NUM_CONV, box.CONV_DIM, box.NUM_FC, box.FC_DIM)

    def box_stage() -> dict[str, nn.Module]:
        return {
            "box_head": build_box_head(*layers, norm=box.NORM),
            "box_predictor": BoxPredictor(
                box_head_output_size(*layers), heads.NUM_CLASSES + 1,
                class_agnostic=box.CLS_AGNOSTIC_BBOX_REG,
            ),
        }

    mask_head = None
    if cfg.MODEL.MASK_ON:
        mask_head = build_from_registry(
            ROI_MASK_HEAD_REGISTRY, "MODEL.ROI_MASK_HEAD.NAME", cfg, input_shape
        )
    if heads.NAME == "CascadeROIHeads":
        check_cascade(cfg)
        cascade = cfg.MODEL.ROI_BOX_CASCADE_HEAD
        stages = [box_stage() for _ in cascade.IOUS]
        common.pop("bbox_reg_weights")
        return CascadeROIHeads(
            mask_head=mask_head,
            box_heads=[s["box_head"] for s in stages],
            box_predictors=[s["box_predictor"] for s in stages],
            stage_ious=list(cascade.IOUS),
            stage_reg_weights=[tuple(w) for w in cascade.BBOX_REG_WEIGHTS],
            **common,
        )
    return MaskRoIHeads(mask_head=mask_head, **box_stage(), **common)


def check_cascade(cfg: CfgNode) -> None:
    """Raise ConfigError where ``ROI_BOX_CASCADE_HEAD`` and the box head disagree as Detectron2's
    ``CascadeROIHeads`` does not allow: class-specific deltas, stage counts, stage 0's IoU."""
    cascade, heads = cfg.MODEL.ROI_BOX_CASCADE_HEAD, cfg.MODEL.ROI_HEADS
    if not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
        raise ConfigError(
            "MODEL.ROI_HEADS.NAME CascadeROIHeads refines one box per proposal from stage to "
            "stage; fix: set MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True (as Detectron2's "
            "cascade configs do)"
        )
    if len(cascade.IOUS) != len(cascade.BBOX_REG_WEIGHTS) or not cascade.IOUS:
        raise ConfigError(
            f"MODEL.ROI_BOX_CASCADE_HEAD has {len(cascade.IOUS)} IOUS and "
            f"{len(cascade.BBOX_REG_WEIGHTS)} BBOX_REG_WEIGHTS; fix: give one IoU and one "
            "(wx, wy, ww, wh) per stage, e.g. IOUS (0.5, 0.6, 0.7)"
        )
    if any(len(w) != 4 for w in cascade.BBOX_REG_WEIGHTS):
        raise ConfigError(
            f"MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = {cascade.BBOX_REG_WEIGHTS}; fix: "
            "four weights (wx, wy, ww, wh) per stage"
        )
    if cascade.IOUS[0] != max(heads.IOU_THRESHOLDS):
        raise ConfigError(
            f"MODEL.ROI_BOX_CASCADE_HEAD.IOUS[0] = {cascade.IOUS[0]} but stage 0 samples its "
            f"proposals at MODEL.ROI_HEADS.IOU_THRESHOLDS = {list(heads.IOU_THRESHOLDS)}; fix: "
            "make them equal"
        )


def build_res5_head(cfg: CfgNode, in_channels: int) -> tuple[nn.Module, int]:
    """The C4 models' res5 stage over ``in_channels`` res4 channels → (module, its output
    channels): the trunk's own res5 as ``MODEL.RESNETS.*`` builds it (depth, ResNeXt groups,
    ``STRIDE_IN_1X1``, norm, deformable convs), stride 2 (14×14 RoIs → 7×7), never frozen."""
    stages = ResNet.from_config(cfg)
    stages.update(out_features=["res5"], freeze_at=0, res4_dilation=1, res5_dilation=1)
    trunk = ResNet(**stages)
    expected = trunk.layer4[0].conv1.in_channels
    if expected != in_channels:
        raise ConfigError(
            f"Res5ROIHeads: MODEL.ROI_HEADS.IN_FEATURES has {in_channels} channels but the "
            f"res5 stage of this ResNet takes {expected}; fix: pool the trunk's res4 "
            "(MODEL.ROI_HEADS.IN_FEATURES ['res4'])"
        )
    return trunk.layer4, trunk.output_shape()["res5"].channels


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(nn.Module):
    """Two-stage instance segmentation (Mask R-CNN; PointRend with its mask head).

    ``forward(batched_inputs)``, each input ``{"image": uint8 C×H×W in INPUT.FORMAT, "height",
    "width", "instances": {"boxes": N×4 XYXY image-tensor pixels, "classes": N long 0..K-1,
    "masks": N×H×W uint8}}`` (instances needed in training only; N may be 0):

    * training → ``{"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"
      (MASK_ON), "loss_mask_point" (PointRend)}``; Cascade R-CNN has ``loss_cls_stage{k}`` and
      ``loss_box_reg_stage{k}`` per stage instead of ``loss_cls`` and ``loss_box_reg``;
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
        rpn: RPN,
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

    def backbone_features(self, tensors: Tensor) -> dict[str, Tensor]:
        """The backbone (+FPN) maps of an N×C×H×W padded batch, as ``forward`` computes them:
        in eval under no_grad with the BatchNorms folded into their convs (same features, one
        pass less), and on CPU in eval from a channels-last input, which oneDNN's convolutions
        run faster (the tiny R-18 FPN: −17% CPU on a 512² input, −27% on 1280²; features
        within 5e-5: bench/RESULTS.md, "tiles" of session 7). The maps come back in the
        default layout: RoIAlign copies a channels-last input on every call, and the RPN head's
        narrow convs are no faster on it."""
        if self.training or tensors.device.type != "cpu":
            return inference_module(self.backbone)(tensors)
        features = inference_module(self.backbone)(
            tensors.contiguous(memory_format=torch.channels_last))
        return {name: feature.contiguous() for name, feature in features.items()}

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
        features = self.backbone_features(images.tensors)
        detections, losses = self.detect(images, features, targets)
        if self.training:
            return losses
        instances = self.postprocess_instances(detections, images, batched_inputs)
        return [{"instances": i} for i in instances]
