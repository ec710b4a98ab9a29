"""Every shipped config builds, trains one step and predicts what DESIGN §3.5 documents.

Runs on CPU on a random 64×64 image whatever sizes the config asks for (resizing is the data
mapper's job), so each case stays within a few seconds even for ResNet-50 models.
"""

from pathlib import Path

import pytest
import torch

from d2seg.config import get_cfg
from d2seg.modeling import build_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# configs/tune/ holds search spaces for tools/tune.py, not configs.
CONFIG_FILES = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if p.parent.name != "tune")
# Outputs of each meta-architecture at inference (DESIGN §3.5).
OUTPUT_KEYS = {
    "GeneralizedRCNN": {"instances"},
    "SemanticSegmentor": {"sem_seg"},
    "PanopticUNet": {"instances", "sem_seg", "panoptic_seg"},
}
HEIGHT, WIDTH = 80, 72  # the size predictions are asked for, unlike the 64×64 input


def _random_input(channels: int, num_sem_seg_labels: int) -> dict:
    """A 64×64 image with one box instance and a random label map (every model's inputs)."""
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 16:48] = 1
    return {
        "image": torch.randint(0, 256, (channels, 64, 64), dtype=torch.uint8),
        "height": HEIGHT,
        "width": WIDTH,
        "instances": {
            "boxes": torch.tensor([[16.0, 8.0, 48.0, 40.0]]),
            "classes": torch.tensor([0]),
            "masks": masks,
        },
        "sem_seg": torch.randint(0, num_sem_seg_labels, (64, 64)),
    }


def test_configs_are_found():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_FILES}
    assert {"Base-RCNN-FPN.yaml", "tiny/mask_rcnn_R_18_tiny.yaml"} <= names


@pytest.mark.parametrize(
    "path", CONFIG_FILES, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix()
)
def test_config_builds_trains_and_predicts(path: Path):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    num_sem_seg_labels = max(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 2)
    inputs = [_random_input(len(cfg.MODEL.PIXEL_MEAN), num_sem_seg_labels)]

    model.train()
    losses = model(inputs)
    assert losses and all(name.startswith("loss_") for name in losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sum(losses.values()).backward()
    optimizer.step()

    model.eval()
    with torch.no_grad():
        (output,) = model([{k: inputs[0][k] for k in ("image", "height", "width")}])
    arch = cfg.MODEL.META_ARCHITECTURE
    assert set(output) == OUTPUT_KEYS[arch]
    if "sem_seg" in output:
        assert output["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, HEIGHT, WIDTH)
    if "instances" in output:
        instances = output["instances"]
        expected = {"boxes", "scores", "classes"} | ({"masks"} if cfg.MODEL.MASK_ON else set())
        assert set(instances) == expected
        count = len(instances["scores"])
        assert count <= cfg.TEST.DETECTIONS_PER_IMAGE
        assert instances["boxes"].shape == (count, 4)
        assert instances["classes"].dtype == torch.int64
        if cfg.MODEL.MASK_ON:
            assert instances["masks"].shape == (count, HEIGHT, WIDTH)
    if "panoptic_seg" in output:
        panoptic, segments = output["panoptic_seg"]
        assert panoptic.shape == (HEIGHT, WIDTH) and panoptic.dtype == torch.int32
        assert set(torch.unique(panoptic).tolist()) <= {0} | {s["id"] for s in segments}
