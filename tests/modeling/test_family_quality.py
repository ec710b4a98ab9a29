"""Every tiny model family learns: trained a few hundred iterations on generated multi-class
data (``shapes``: discs, squares, triangles + background) it reaches mIoU >= 70 on unseen
images, and each head overfits two images to mIoU >= 90, both scored by SemSegEvaluator (whose
mIoU is ×100).

The heads without a decoder (DeepLabV3, FCN) predict at output stride 16, so at 64 px their
logits are a 4×4 grid upsampled bilinearly. Fitting such a grid directly to the ground truth
(gradient descent on the grid itself, no network) reaches only mIoU 82 on this data, 96 at
128 px: they train on 128 px images, the others on 64 px. Each run uses the config's own
optimizer and schedule (AdamW, warmup + cosine over the run), one thread, CPU.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from d2seg.config import CfgNode, get_cfg
from d2seg.data.synthetic import SYNTHETIC_CLASSES, render_sample
from d2seg.evaluation import SemSegEvaluator, inference_on_dataset
from d2seg.modeling import build_model
from d2seg.solver import build_lr_scheduler, build_optimizer

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny"
CLASSES = ["background", *SYNTHETIC_CLASSES["shapes"]]
# The tiny configs' BASE_LR (0.001) is set for their smoke runs; these runs use 0.003 (0.001
# was not tried here; 0.01 trained DeepLabV3 worse: mIoU 65 vs 70 after 150 steps at 128 px).
BASE_LR = 0.003


def _sample(seed: int, index: int, side: int) -> dict:
    """Image ``index`` of the ``shapes`` set made with ``seed``: uint8 3×H×W and long labels."""
    sample = render_sample("shapes", seed=seed, size=(side, side), index=index)
    labels = np.zeros((side, side), dtype=np.int64)
    for mask, label in zip(sample["masks"], sample["classes"]):
        labels[mask] = label + 1
    image = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
    return {"image": image, "sem_seg": torch.from_numpy(labels)}


def _model_and_cfg(config: str, iterations: int) -> tuple[torch.nn.Module, CfgNode]:
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY / f"{config}.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(CLASSES),
                         "SOLVER.BASE_LR", BASE_LR, "SOLVER.MAX_ITER", iterations])
    torch.manual_seed(0)
    return build_model(cfg), cfg


def _train(config: str, train: list[dict], iterations: int, batch: int) -> torch.nn.Module:
    """``iterations`` steps on random batches of ``batch`` images from ``train``."""
    model, cfg = _model_and_cfg(config, iterations)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(iterations):
        picks = torch.randperm(len(train), generator=generator)[:batch].tolist()
        loss = model([train[i] for i in picks])["loss_sem_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model


def _evaluate(model: torch.nn.Module, samples: list[dict], folder: Path) -> dict[str, float]:
    """SemSegEvaluator's metrics of ``model`` on ``samples`` (labels written as PNGs)."""
    folder.mkdir()
    dataset = []
    for i, sample in enumerate(samples):
        path = folder / f"{i}.png"
        Image.fromarray(sample["sem_seg"].numpy().astype(np.uint8)).save(path)
        height, width = sample["sem_seg"].shape
        dataset.append({"image": sample["image"], "sem_seg_file_name": str(path),
                        "height": height, "width": width})
    evaluator = SemSegEvaluator(class_names=CLASSES)
    return inference_on_dataset(model, [dataset[i:i + 4] for i in range(0, len(dataset), 4)],
                                evaluator)["sem_seg"]


def _summary(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {metrics[f'IoU-{name}']:.1f}" for name in CLASSES)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# (tiny config, image side in px, iterations, images per batch). The U-Net head trains on the
# EfficientNet-B0 encoder here and below: the ResNet-18 U-Net costs about 3× the CPU per step
# and learns the disc class last (IoU 23 after 80 steps on two images); test_semantic.py
# overfits it.
# DeepLabV3+ takes 8 images a batch: with 4, BatchNorm's batch statistics of its 4×4 ASPP maps
# are so noisy that the running statistics used in eval mode miss one class (mIoU 65, square
# IoU 20, where the same weights in training mode score 74); with 8, eval scores 83.
FAMILIES = [
    ("unet_EffB0_tiny", 64, 60, 4),
    ("deeplabv3plus_MNV3_tiny", 64, 100, 8),
    ("lraspp_MNV3_tiny", 64, 100, 4),
    ("deeplabv3_MNV3_tiny", 128, 200, 4),
    ("fcn_MNV3_tiny", 128, 200, 4),
]


@pytest.mark.slow
@pytest.mark.parametrize("config, side, iterations, batch", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_reaches_miou_70_on_unseen_shapes(config, side, iterations, batch, tmp_path):
    train = [_sample(0, i, side) for i in range(128)]
    model = _train(config, train, iterations, batch)
    metrics = _evaluate(model, [_sample(1, i, side) for i in range(16)], tmp_path / "val")
    print(f"{config}: mIoU {metrics['mIoU']:.1f} ({_summary(metrics)})")
    assert metrics["mIoU"] >= 70, f"{config}: mIoU {metrics['mIoU']:.1f} ({_summary(metrics)})"


# One config per head: (tiny config, image side in px, iterations); the two images are the
# batch of every step. At 64 px the deepest maps hold a few values per channel and image, so
# BatchNorm's batch variance and its unbiased running variance (used in eval mode) differ
# enough to cost points: LR-ASPP scores 88 in eval mode where the same weights score 94 in
# training mode; at 128 px 96 in both. DeepLabV3 needs the longer run for its 0.5 ASPP dropout.
HEADS = [
    ("unet_EffB0_tiny", 64, 100),
    ("deeplabv3plus_MNV3_tiny", 128, 100),
    ("lraspp_MNV3_tiny", 128, 100),
    ("deeplabv3_MNV3_tiny", 128, 200),
    ("fcn_MNV3_tiny", 128, 100),
]


@pytest.mark.slow
@pytest.mark.parametrize("config, side, iterations", HEADS, ids=[h[0] for h in HEADS])
def test_head_overfits_two_images(config, side, iterations, tmp_path):
    images = [_sample(2, i, side) for i in range(2)]
    model = _train(config, images, iterations, batch=2)
    metrics = _evaluate(model, images, tmp_path / "train")
    print(f"{config}: mIoU {metrics['mIoU']:.1f} ({_summary(metrics)})")
    assert metrics["mIoU"] >= 90, f"{config}: mIoU {metrics['mIoU']:.1f} ({_summary(metrics)})"
