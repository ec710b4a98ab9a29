#!/usr/bin/env python
"""Model latency on CPU: d2seg models against the libraries they replace, one process.

Two pairs, each run on the same ``--size``² image (a synthetic balloon scene), in eval mode,
under ``torch.no_grad()`` with ``torch.set_num_threads(--threads)``; one warm-up call each, then
``--repeats`` alternating calls; the ratio is the median of the per-pair ratios d2seg /
reference (robust to the load of a shared machine):

1. ``configs/Semantic/unet_R_34_12cls.yaml`` (``SemanticSegmentor``: the whole model call,
   normalisation and padding included) vs ``segmentation_models_pytorch.Unet("resnet34",
   encoder_weights=None, classes=12)`` on the same uint8 image, which its call normalises as
   d2seg's does → ``unet_r34_latency_ratio`` (target <= 1.0) with the default bilinear
   decoder, and ``unet_r34_nearest_latency_ratio`` with ``MODEL.SEM_SEG_HEAD.UPSAMPLE
   nearest``, the upsampling smp uses;
2. ``configs/InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml`` (``GeneralizedRCNN``) vs
   ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``
   with its resizing disabled (min/max size = the image). d2seg loads torchvision's random
   weights through ``map_external_state_dict`` and both keep every detection
   (``--score-thresh``), so both run the same boxes through the mask head and paste the same
   number of masks → ``maskrcnn_latency_ratio`` (target <= 0.95, issue 17). The config keeps
   Detectron2's adaptive RoIAlign sampling (``POOLER_SAMPLING_RATIO: 0``: up to
   ceil(box side / 7) samples per bin, more work on large boxes) where torchvision samples 2;
   ``--pooler-sampling-ratio 2`` runs d2seg with torchvision's value.

3. model families (issue 13), each d2seg config vs the same architecture in
   segmentation_models_pytorch (``encoder_weights=None``) or torchvision (``weights=None``),
   on the same uint8 image, normalised in its call: ``unet_vgg16_bn_latency_ratio``
   (``unet_VGG16_12cls`` vs ``smp.Unet("vgg16_bn")``), ``unet_efficientnet_b0_latency_ratio`` (``unet_EffB0`` vs
   ``smp.Unet("efficientnet-b0")``), ``deeplabv3plus_r50_latency_ratio``
   (``deeplabv3plus_R_50`` with smp's separable ASPP and rates 12/24/36 vs
   ``smp.DeepLabV3Plus("resnet50")``), ``deeplabv3_r50_latency_ratio`` (``deeplabv3_R_50``
   vs ``smp.DeepLabV3("resnet50")``), ``fcn_r50_latency_ratio`` (``fcn_R_50`` vs
   ``torchvision fcn_resnet50``, its weights loaded into d2seg so both compute the same
   logits) and ``lraspp_mnv3_large_latency_ratio`` (``lraspp_MNV3_large`` vs torchvision's
   ``lraspp_mobilenet_v3_large``, weights loaded likewise); targets <= 1.0.

d2seg's eval calls under ``no_grad`` run with each BatchNorm folded into its conv
(:mod:`d2seg.modeling.batchnorm_folding`); the references run theirs as built.

Also prints each model's parameter count and fvcore FLOPs (``FlopCountAnalysis``, one
multiply-add = one flop, as Detectron2 reports them; operators fvcore has no formula for are
left out, the same for both sides).
"""

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torchvision
from fvcore.nn import FlopCountAnalysis
from torch import nn

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.modeling import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
UNET_CONFIG = CONFIGS / "Semantic" / "unet_R_34_12cls.yaml"
MASK_RCNN_CONFIG = CONFIGS / "InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x.yaml"
# torchvision's COCO class count, background included: d2seg's NUM_CLASSES is one less.
TORCHVISION_NUM_CLASSES = 91


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_seconds(
    first: Callable[[], Any], second: Callable[[], Any], repeats: int, clock: str
) -> tuple[list[float], list[float]]:
    """Times (``CLOCKS[clock]``) of ``repeats`` alternating calls of ``first`` and ``second``,
    after one warm-up call of each. Alternating keeps load changes out of the ratio."""
    first(), second()
    now = CLOCKS[clock]
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for call, out in zip((first, second), times):
            start = now()
            call()
            out.append(now() - start)
    return times


def gflops(model: nn.Module, inputs: tuple) -> float:
    analysis = FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis.total() / 1e9


def million_params(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def million_used_params(model: nn.Module, inputs: tuple) -> float:
    """Parameters of the modules a forward call runs (leaves a model holds but never calls,
    e.g. a classifier layer kept in an encoder, are left out)."""
    called: set[nn.Module] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: called.add(m)) for m in model.modules()]
    with torch.no_grad():
        model(*inputs)
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for m in called for p in m.parameters(recurse=False)) / 1e6


def d2seg_model(config: Path, *overrides: Any) -> nn.Module:
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    return build_model(cfg).eval()


def report(name: str, ours: nn.Module, ours_inputs: tuple, reference: nn.Module,
           reference_inputs: tuple, args: argparse.Namespace) -> None:
    """Print params, FLOPs, median latencies and ``name: ratio`` (d2seg / reference)."""
    with torch.no_grad():
        for label, model, inputs in (("d2seg", ours, ours_inputs),
                                     ("reference", reference, reference_inputs)):
            print(f"{name} {label}: {million_params(model):.3f} M params "
                  f"({million_used_params(model, inputs):.3f} M used in forward), "
                  f"{gflops(model, inputs):.2f} GFLOPs")
        ours_s, reference_s = interleaved_seconds(
            lambda: ours(*ours_inputs), lambda: reference(*reference_inputs), args.repeats,
            args.clock,
        )
    print(f"{name}: median d2seg {statistics.median(ours_s) * 1000:.1f} ms, reference "
          f"{statistics.median(reference_s) * 1000:.1f} ms")
    print(f"{name}: {statistics.median(a / b for a, b in zip(ours_s, reference_s)):.3f}")


def bench_unet(image: torch.Tensor, args: argparse.Namespace) -> None:
    reference = None
    for name, upsample in (("unet_r34_latency_ratio", "bilinear"),
                           ("unet_r34_nearest_latency_ratio", "nearest")):
        ours = d2seg_model(UNET_CONFIG, "MODEL.SEM_SEG_HEAD.UPSAMPLE", upsample)
        if reference is None:
            reference = _Normalising(
                smp.Unet("resnet34", encoder_weights=None,
                         classes=ours.sem_seg_head.num_classes).eval(),
                ours.preprocessor.pixel_mean, ours.preprocessor.pixel_std,
            )
        report(name, ours, ([{"image": image}],), reference, (image,), args)


def bench_mask_rcnn(image: torch.Tensor, args: argparse.Namespace) -> None:
    score_thresh = args.score_thresh
    size = min(image.shape[1:])
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=TORCHVISION_NUM_CLASSES,
        min_size=size,
        max_size=max(image.shape[1:]),
        box_score_thresh=score_thresh,
    ).eval()
    overrides = []
    if args.pooler_sampling_ratio is not None:
        for head in ("ROI_BOX_HEAD", "ROI_MASK_HEAD"):
            overrides += [f"MODEL.{head}.POOLER_SAMPLING_RATIO", args.pooler_sampling_ratio]
    ours = d2seg_model(
        MASK_RCNN_CONFIG,
        "MODEL.ROI_HEADS.NUM_CLASSES", TORCHVISION_NUM_CLASSES - 1,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", score_thresh,
        *overrides,
    )
    ours.load_state_dict(ours.map_external_state_dict(reference.state_dict()))
    with torch.no_grad():
        detections = len(ours([{"image": image}])[0]["instances"]["scores"])
        reference_detections = len(reference([image.float() / 255])[0]["scores"])
    print(f"maskrcnn: {detections} detections (d2seg), {reference_detections} (torchvision)")
    report("maskrcnn_latency_ratio", ours, ([{"image": image}],), reference,
           ([image.float() / 255],), args)


SEMANTIC = CONFIGS / "Semantic"


def _smp(architecture: str, encoder: str, **kwargs: Any) -> Callable[[int], nn.Module]:
    return lambda classes: getattr(smp, architecture)(
        encoder, encoder_weights=None, classes=classes, **kwargs)


def _torchvision(builder: Callable[..., nn.Module]) -> Callable[[int], nn.Module]:
    return lambda classes: builder(weights=None, weights_backbone=None, num_classes=classes)


class _TorchvisionOut(nn.Module):
    """torchvision segmentation models return ``{"out": logits}``; the bench times the call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class _Normalising(nn.Module):
    """A reference model called on the uint8 image tensor, as the d2seg model is: its call
    includes the ``(x - mean) / std`` a user of it has to do (d2seg's call does it inside)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(((image.float() - self.mean) / self.std)[None])


# name -> (d2seg config, overrides, reference builder(num_classes), reference is torchvision)
FAMILIES: dict[str, tuple[Path, list, Callable[[int], nn.Module], bool]] = {
    "unet_vgg16_bn_latency_ratio": (
        SEMANTIC / "unet_VGG16_12cls.yaml", [], _smp("Unet", "vgg16_bn"), False),
    "unet_efficientnet_b0_latency_ratio": (
        SEMANTIC / "unet_EffB0.yaml", [], _smp("Unet", "efficientnet-b0"), False),
    "deeplabv3plus_r50_latency_ratio": (
        SEMANTIC / "deeplabv3plus_R_50.yaml",
        ["MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV", True,
         "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", [12, 24, 36]],
        _smp("DeepLabV3Plus", "resnet50"), False),
    "deeplabv3_r50_latency_ratio": (
        SEMANTIC / "deeplabv3_R_50.yaml", [], _smp("DeepLabV3", "resnet50"), False),
    "fcn_r50_latency_ratio": (
        SEMANTIC / "fcn_R_50.yaml", [],
        _torchvision(torchvision.models.segmentation.fcn_resnet50), True),
    "lraspp_mnv3_large_latency_ratio": (
        SEMANTIC / "lraspp_MNV3_large.yaml", [],
        _torchvision(torchvision.models.segmentation.lraspp_mobilenet_v3_large), True),
}


def family_pair(name: str) -> tuple[nn.Module, nn.Module]:
    """The d2seg model of the :data:`FAMILIES` row ``name`` and its reference, which takes the
    same 0-255 image (N×3×H×W) and returns logits."""
    config, overrides, build_reference, is_torchvision = FAMILIES[name]
    ours = d2seg_model(config, *overrides)
    reference = build_reference(ours.sem_seg_head.num_classes).eval()
    if is_torchvision:
        # Same parameters key for key: both models compute from the same weights.
        ours.load_state_dict(ours.map_external_state_dict(reference.state_dict()))
        reference = _TorchvisionOut(reference)
    reference = _Normalising(reference, ours.preprocessor.pixel_mean, ours.preprocessor.pixel_std)
    return ours, reference


def bench_families(image: torch.Tensor, args: argparse.Namespace) -> None:
    for name in FAMILIES:
        ours, reference = family_pair(name)
        report(name, ours, ([{"image": image}],), reference, (image,), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: process CPU time, steadier on a busy machine with --threads 1")
    parser.add_argument("--score-thresh", type=float, default=0.0,
                        help="Mask R-CNN detection score threshold (both models)")
    parser.add_argument("--pooler-sampling-ratio", type=int, default=None,
                        help="override d2seg's RoIAlign sampling ratios (config: 0 = adaptive, "
                        "Detectron2's; torchvision uses 2)")
    parser.add_argument("--only", choices=("unet", "maskrcnn", "families"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logging.disable(logging.WARNING)  # fvcore's per-op tracing notes
    sample = render_sample("balloons", seed=0, size=(args.size, args.size))
    image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
    print(f"image {args.size}x{args.size}, {args.threads} threads, {args.clock} clock, "
          f"median of {args.repeats}")
    if args.only in (None, "unet"):
        bench_unet(image, args)
    if args.only in (None, "maskrcnn"):
        bench_mask_rcnn(image, args)
    if args.only in (None, "families"):
        bench_families(image, args)


if __name__ == "__main__":
    main()
