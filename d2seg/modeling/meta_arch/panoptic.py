"""PanopticUNet: Mask R-CNN/PointRend for "things" and a U-Net head for "stuff", one trunk.

One ResNet pass feeds both the FPN (→ RPN → RoI heads, as :class:`GeneralizedRCNN`) and the
U-Net decoder (``MODEL.SEM_SEG_HEAD``, over the trunk's stem/res2..res5). Detectron2's
PanopticFPN conventions for the semantic branch:

* semantic class 0 is "things": every pixel of any thing (instance) class;
* class 1 is "background": pixels no segment covers (void in a panoptic PNG; on the
  converter's output, where every category is a thing, that is all non-object pixels);
* classes 2..``SEM_SEG_HEAD.NUM_CLASSES``-1 are the dataset's stuff categories in contiguous
  order, so ``NUM_CLASSES`` = 2 + their number;
* ``SEM_SEG_HEAD.IGNORE_VALUE`` (255) is void, ignored by the loss.

Instance classes are contiguous over thing categories (``ROI_HEADS.NUM_CLASSES`` of them).
:class:`~d2seg.data.mapper.DatasetMapper` derives these labels from a panoptic PNG
(:func:`~d2seg.data.detection_utils.panoptic_to_targets`); the panoptic output fuses the two
branches with :func:`~d2seg.modeling.postprocess.combine_semantic_and_instance_outputs` and
keeps the semantic label as a stuff segment's ``category_id``, which
:class:`~d2seg.evaluation.PanopticEvaluator` maps back to dataset ids (background → void).
"""

from typing import Any

from torch import Tensor, nn

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.backbone.fpn import FPN
from d2seg.modeling.meta_arch.rcnn import GeneralizedRCNN
from d2seg.modeling.meta_arch.semantic import build_sem_seg_head, sem_seg_inference
from d2seg.modeling.postprocess import combine_semantic_and_instance_outputs
from d2seg.modeling.preprocess import pad_sem_seg_targets
from d2seg.modeling.registry import META_ARCH_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


@META_ARCH_REGISTRY.register()
class PanopticUNet(GeneralizedRCNN):
    """Panoptic segmentation: GeneralizedRCNN + a semantic head on the shared trunk.

    Inputs as :class:`GeneralizedRCNN` plus, in training, ``"sem_seg"`` (long H×W, labels as in
    the module docstring). Training returns the instance losses times
    ``PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT`` and ``loss_sem_seg`` (already times
    ``SEM_SEG_HEAD.LOSS_WEIGHT``). Inference returns per image ``{"instances": as
    GeneralizedRCNN, "sem_seg": K×height×width logits, "panoptic_seg": (height×width int32
    segment ids, segments_info)}``; ``panoptic_seg`` only when ``PANOPTIC_FPN.COMBINE.ENABLED``.
    """

    tasks = ("instances", "panoptic_seg")

    @classmethod
    def headline_metric(cls, cfg: CfgNode) -> str:
        return "panoptic_seg/PQ"

    @classmethod
    def class_counts(cls, cfg: CfgNode, metadata: dict[str, Any]) -> dict[str, int | None]:
        """Thing classes for the RoI heads; things + background + each stuff category for
        the semantic head."""
        counts = super().class_counts(cfg, metadata)
        stuff = metadata.get("stuff_dataset_id_to_contiguous_id") or {}
        known = "thing_classes" in metadata
        counts["MODEL.SEM_SEG_HEAD.NUM_CLASSES"] = 2 + len(stuff) if known else None
        return counts

    def __init__(
        self,
        *,
        sem_seg_head: nn.Module,
        instance_loss_weight: float,
        combine_enabled: bool,
        combine_overlap_thresh: float,
        combine_stuff_area_thresh: int,
        combine_instances_score_thresh: float,
        **rcnn_kwargs: Any,
    ):
        """
        Args:
            sem_seg_head: the semantic head over the FPN's trunk features (see
                :class:`SemanticSegmentor`), trained on the labels of the module docstring.
            instance_loss_weight: factor on every instance loss.
            combine_enabled: also return ``panoptic_seg`` in inference.
            combine_overlap_thresh, combine_stuff_area_thresh, combine_instances_score_thresh:
                :func:`~d2seg.modeling.postprocess.combine_semantic_and_instance_outputs`'s.
            rcnn_kwargs: :class:`GeneralizedRCNN`'s arguments; the backbone must be an FPN.
        """
        super().__init__(**rcnn_kwargs)
        if not isinstance(self.backbone, FPN):
            raise ConfigError(
                f"PanopticUNet needs a trunk + FPN backbone, got {type(self.backbone).__name__}; "
                "fix: MODEL.BACKBONE.NAME build_resnet_fpn_backbone"
            )
        self.sem_seg_head = sem_seg_head
        self.instance_loss_weight = instance_loss_weight
        self.combine_enabled = combine_enabled
        self.combine_overlap_thresh = combine_overlap_thresh
        self.combine_stuff_area_thresh = combine_stuff_area_thresh
        self.combine_instances_score_thresh = combine_instances_score_thresh

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        if not cfg.MODEL.MASK_ON:
            raise ConfigError(
                "MODEL.META_ARCHITECTURE PanopticUNet needs instance masks; fix: MODEL.MASK_ON True"
            )
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES < 2:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}: "
                "PanopticUNet predicts class 0 = things and 1 = background; fix: set it to 2 + "
                "the number of stuff categories (2 for the converter's output)"
            )
        rcnn = super().from_config(cfg)
        combine = cfg.MODEL.PANOPTIC_FPN.COMBINE
        return {
            **rcnn,
            "sem_seg_head": build_sem_seg_head(cfg, cls.sem_seg_input_shape(rcnn["backbone"])),
            "instance_loss_weight": cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT,
            "combine_enabled": combine.ENABLED,
            "combine_overlap_thresh": combine.OVERLAP_THRESH,
            "combine_stuff_area_thresh": combine.STUFF_AREA_LIMIT,
            "combine_instances_score_thresh": combine.INSTANCES_CONFIDENCE_THRESH,
        }

    @classmethod
    def sem_seg_input_shape(cls, backbone: FPN) -> dict[str, ShapeSpec]:
        """The features the semantic head is built on: the trunk's (stem, res2..res5)."""
        return backbone.bottom_up.output_shape()

    def sem_seg_features(
        self, pyramid: dict[str, Tensor], trunk: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """The features the semantic head reads, of those :meth:`sem_seg_input_shape` names."""
        return trunk

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        images = self.preprocessor(batched_inputs)
        pyramid, trunk = self.backbone.forward_with_trunk(images.tensors)
        targets, sem_seg_targets = None, None
        if self.training:
            targets = self.targets(batched_inputs)
            sem_seg_targets = pad_sem_seg_targets(
                batched_inputs,
                tuple(images.tensors.shape[-2:]),
                self.sem_seg_head.ignore_value,
                self.device,
            )
        sem_seg_logits, sem_seg_losses = self.sem_seg_head(
            self.sem_seg_features(pyramid, trunk), sem_seg_targets
        )
        detections, losses = self.detect(images, pyramid, targets)
        if self.training:
            losses = {k: v * self.instance_loss_weight for k, v in losses.items()}
            return {**losses, **sem_seg_losses}

        results = []
        all_instances = self.postprocess_instances(detections, images, batched_inputs)
        sem_segs = sem_seg_inference(sem_seg_logits, images.image_sizes, batched_inputs)
        for instances, sem_seg in zip(all_instances, sem_segs):
            result: dict[str, Any] = {"instances": instances, "sem_seg": sem_seg}
            if self.combine_enabled:
                result["panoptic_seg"] = self.combine(instances, sem_seg)
            results.append(result)
        return results

    def combine(self, instances: dict[str, Tensor], sem_seg: Tensor) -> tuple[Tensor, list[dict]]:
        """Panoptic fusion of one image's instances and K×H×W semantic logits."""
        return combine_semantic_and_instance_outputs(
            instances,
            sem_seg.argmax(dim=0),
            overlap_threshold=self.combine_overlap_thresh,
            stuff_area_thresh=self.combine_stuff_area_thresh,
            instances_score_thresh=self.combine_instances_score_thresh,
        )
