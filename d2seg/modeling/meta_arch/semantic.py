"""``SemanticSegmentor``: a backbone + a dense head that owns its loss."""

from typing import Any

import torch
from torch import Tensor, nn

from d2seg.config import CfgNode
from d2seg.modeling.backbone import Backbone, build_backbone
from d2seg.modeling.backbone.stem import map_backbone_checkpoint
from d2seg.modeling.batchnorm_folding import inference_module
from d2seg.modeling.build import build_from_registry
from d2seg.modeling.postprocess import sem_seg_postprocess
from d2seg.modeling.preprocess import ImagePreprocessor, pad_sem_seg_targets
from d2seg.modeling.registry import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec
from d2seg.modeling.torchvision_keys import map_torchvision_segmentation_keys


def build_sem_seg_head(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """``MODEL.SEM_SEG_HEAD.NAME`` built over a backbone's ``output_shape()``."""
    import d2seg.modeling.heads  # noqa: F401  (registers the heads)

    return build_from_registry(SEM_SEG_HEADS_REGISTRY, "MODEL.SEM_SEG_HEAD.NAME", cfg, input_shape)


def sem_seg_inference(
    logits: Tensor, image_sizes: list[tuple[int, int]], batched_inputs: list[dict[str, Any]]
) -> list[Tensor]:
    """N×K×H'×W' padded-batch logits → per input K×height×width, on its image's device."""
    results = []
    for x, image_logits, size in zip(batched_inputs, logits, image_sizes):
        height, width = int(x.get("height", size[0])), int(x.get("width", size[1]))
        sem_seg = sem_seg_postprocess(image_logits, size, height, width)
        results.append(sem_seg.to(x["image"].device))
    return results


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(nn.Module):
    """Per-pixel classification into ``NUM_CLASSES`` classes (one sigmoid logit when it is 1).

    ``forward(batched_inputs)`` takes DESIGN §3.4 inputs: ``"image"`` uint8 C×H×W in
    ``INPUT.FORMAT``, ``"height"``/``"width"`` (output size, default the image's) and, in
    training, ``"sem_seg"`` long H×W (``IGNORE_VALUE`` = unlabelled). Images are normalised,
    padded to the backbone's ``size_divisibility`` (the padding is ignored by the loss).

    Training returns the head's losses, ``{"loss_sem_seg": scalar}``. Inference returns, per
    input, ``{"sem_seg": K×height×width logits}`` on the input image's device: for K ≥ 2 the
    class is ``argmax`` over K; for K = 1 (binary) the foreground probability is
    ``sigmoid(logit)``, so foreground is ``logit > 0``.

    Example::

        import torch
        from d2seg import build_model, get_cfg

        cfg = get_cfg()
        cfg.merge_from_file("configs/tiny/unet_R_18_tiny.yaml")
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        image = torch.zeros(3, 64, 96, dtype=torch.uint8)
        with torch.no_grad():
            logits = model([{"image": image}])[0]["sem_seg"]   # NUM_CLASSES×64×96
    """

    tasks = ("sem_seg",)

    @classmethod
    def headline_metric(cls, cfg: CfgNode) -> str:
        """mIoU; for a binary model (one logit) the foreground IoU, since a two-class mean
        is lifted by the easy background."""
        return "sem_seg/IoU" if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1 else "sem_seg/mIoU"

    @classmethod
    def class_counts(cls, cfg: CfgNode, metadata: dict[str, Any]) -> dict[str, int | None]:
        """One logit per ``stuff_classes`` entry (background included); a binary dataset
        (two classes) may also be learnt with one sigmoid logit, ``NUM_CLASSES 1``."""
        classes = metadata.get("stuff_classes")
        count = None if classes is None else len(classes)
        if count == 2 and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1:
            count = 1
        return {"MODEL.SEM_SEG_HEAD.NUM_CLASSES": count}

    def __init__(self, *, backbone: Backbone, sem_seg_head: nn.Module, preprocessor: ImagePreprocessor):
        """
        Args:
            backbone: the trunk; its ``output_shape()`` feeds the head.
            sem_seg_head: ``head(features, targets) -> (logits | None, losses)`` with an
                ``ignore_value`` attribute (see :class:`~d2seg.modeling.heads.SemSegHead`).
            preprocessor: normalisation and padding of the input images.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.preprocessor = preprocessor

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "preprocessor": ImagePreprocessor(
                **ImagePreprocessor.from_config(cfg, backbone.size_divisibility)
            ),
        }

    @property
    def device(self) -> torch.device:
        return self.preprocessor.pixel_mean.device

    def map_external_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Checkpointer hook: torchvision classification (backbone) and segmentation model
        files, and other input-channel counts, load."""
        mapped = map_torchvision_segmentation_keys(state_dict, self)
        return map_backbone_checkpoint(mapped, self)

    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, Tensor] | list[dict]:
        images = self.preprocessor(batched_inputs)
        targets = None
        if self.training:
            targets = pad_sem_seg_targets(
                batched_inputs,
                tuple(images.tensors.shape[-2:]),
                self.sem_seg_head.ignore_value,
                self.device,
            )
        # Eval under no_grad: BatchNorms folded into their convs (same logits, one pass less).
        backbone, head = inference_module(self.backbone), inference_module(self.sem_seg_head)
        logits, losses = head(backbone(images.tensors), targets)
        if self.training:
            return losses
        sem_segs = sem_seg_inference(logits, images.image_sizes, batched_inputs)
        return [{"sem_seg": sem_seg} for sem_seg in sem_segs]
