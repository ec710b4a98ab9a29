"""``SemanticSegmentor``: a trunk + a dense head (ResNetUNetHead) + a per-pixel loss."""

from typing import Any

import torch
from torch import Tensor, nn

from d2seg.config import CfgNode
from d2seg.modeling.backbone import Backbone, build_backbone
from d2seg.modeling.backbone.resnet import map_resnet_checkpoint
from d2seg.modeling.build import build_from_registry
from d2seg.modeling.losses import SemSegLoss
from d2seg.modeling.preprocess import ImagePreprocessor, pad_sem_seg_targets, resize_to_input
from d2seg.modeling.registry import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY
from d2seg.modeling.shape_spec import ShapeSpec


def build_sem_seg_head(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """``MODEL.SEM_SEG_HEAD.NAME`` built over a backbone's ``output_shape()``."""
    import d2seg.modeling.heads  # noqa: F401  (registers the heads)

    return build_from_registry(SEM_SEG_HEADS_REGISTRY, "MODEL.SEM_SEG_HEAD.NAME", cfg, input_shape)


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(nn.Module):
    """Per-pixel classification into ``NUM_CLASSES`` classes (one sigmoid logit when it is 1).

    ``forward(batched_inputs)`` takes DESIGN §3.4 inputs: ``"image"`` uint8 C×H×W in
    ``INPUT.FORMAT``, ``"height"``/``"width"`` (output size, default the image's) and, in
    training, ``"sem_seg"`` long H×W (``IGNORE_VALUE`` = unlabelled). Images are normalised,
    padded to the backbone's ``size_divisibility`` (the padding is ignored by the loss).

    Training returns ``{"loss_sem_seg": scalar}``. Inference returns, per input,
    ``{"sem_seg": K×height×width logits}`` on the input image's device: for K ≥ 2 the class is
    ``argmax`` over K; for K = 1 (binary) the foreground probability is ``sigmoid(logit)``, so
    foreground is ``logit > 0``.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        preprocessor: ImagePreprocessor,
        loss: SemSegLoss,
    ):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.preprocessor = preprocessor
        self.loss = loss

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "preprocessor": ImagePreprocessor(
                **ImagePreprocessor.from_config(cfg, backbone.size_divisibility)
            ),
            "loss": SemSegLoss(**SemSegLoss.from_config(cfg)),
        }

    @property
    def device(self) -> torch.device:
        return self.preprocessor.pixel_mean.device

    def map_external_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Checkpointer hook: torchvision ResNet files and other input-channel counts load."""
        return map_resnet_checkpoint(state_dict, self)

    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, Tensor] | list[dict]:
        images = self.preprocessor(batched_inputs)
        logits = self.sem_seg_head(self.backbone(images.tensors))
        if self.training:
            targets = pad_sem_seg_targets(
                batched_inputs, tuple(logits.shape[-2:]), self.loss.ignore_value, self.device
            )
            return {"loss_sem_seg": self.loss(logits, targets)}
        results = []
        for x, image_logits, image_size in zip(batched_inputs, logits, images.image_sizes):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            sem_seg = resize_to_input(image_logits, image_size, height, width)
            results.append({"sem_seg": sem_seg.to(x["image"].device)})
        return results
