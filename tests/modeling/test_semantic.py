"""SemanticSegmentor: every semantic config trains and predicts; a tiny U-Net overfits."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.errors import ConfigError, DatasetError
from d2seg.modeling import build_model
from d2seg.modeling.postprocess import sem_seg_postprocess
from d2seg.modeling.preprocess import ImagePreprocessor, pad_sem_seg_targets

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEMANTIC_CONFIGS = sorted(CONFIGS.glob("Semantic/*.yaml")) + sorted(
    CONFIGS.glob("tiny/unet_*.yaml")
)


def _cfg(path: Path):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _inputs(cfg, sizes, output_size=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    channels = len(cfg.MODEL.PIXEL_MEAN)
    labels = max(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 2)
    inputs = []
    for height, width in sizes:
        item = {
            "image": torch.randint(0, 256, (channels, height, width), generator=generator).byte(),
            "sem_seg": torch.randint(0, labels, (height, width), generator=generator),
        }
        if output_size is not None:
            item["height"], item["width"] = output_size
        inputs.append(item)
    return inputs


def test_semantic_configs_exist():
    names = {p.name for p in SEMANTIC_CONFIGS}
    assert {"Base-UNet.yaml", "unet_R_50_gray_512.yaml", "unet_R_34_12cls.yaml"} <= names
    assert {"unet_R_18_tiny.yaml", "unet_R_18_gray_binary_tiny.yaml"} <= names


@pytest.mark.parametrize("config", SEMANTIC_CONFIGS, ids=lambda p: p.stem)
def test_config_trains_one_step_and_predicts_at_input_size(config):
    cfg = _cfg(config)
    torch.manual_seed(0)
    model = build_model(cfg)
    # Non-square, not multiples of 32 (padded inside), two sizes in one batch.
    model.train()
    losses = model(_inputs(cfg, [(50, 70), (64, 40)]))
    assert list(losses) == ["loss_sem_seg"] and torch.isfinite(losses["loss_sem_seg"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses["loss_sem_seg"].backward()
    optimizer.step()

    model.eval()
    with torch.no_grad():
        outputs = model(_inputs(cfg, [(50, 70)], output_size=(37, 91)) + _inputs(cfg, [(64, 40)]))
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert [list(o) for o in outputs] == [["sem_seg"], ["sem_seg"]]
    assert outputs[0]["sem_seg"].shape == (num_classes, 37, 91)
    assert outputs[1]["sem_seg"].shape == (num_classes, 64, 40)  # no height/width: image size
    assert outputs[0]["sem_seg"].dtype == torch.float32
    assert torch.isfinite(outputs[0]["sem_seg"]).all()


def test_gray_car_config_is_binary_grayscale_r50():
    cfg = _cfg(CONFIGS / "Semantic/unet_R_50_gray_512.yaml")
    assert cfg.INPUT.FORMAT == "L" and len(cfg.MODEL.PIXEL_MEAN) == 1
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1
    assert cfg.MODEL.SEM_SEG_HEAD.LOSS == "ce+dice" and cfg.INPUT.CROP.SIZE == [512, 512]


def test_config_mistakes_name_the_key_and_the_fix():
    cfg = _cfg(CONFIGS / "tiny/unet_R_18_tiny.yaml")
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"  # Detectron2's FPN models'
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    with pytest.raises(ConfigError, match="SEM_SEG_HEAD.IN_FEATURES.*build_resnet_backbone"):
        build_model(cfg)
    cfg = _cfg(CONFIGS / "tiny/unet_R_18_tiny.yaml")
    cfg.MODEL.SEM_SEG_HEAD.DECODER_CHANNELS = [8] * 6
    with pytest.raises(ConfigError, match="DECODER_CHANNELS.*at most 5"):
        build_model(cfg)


def test_preprocessor_normalises_and_pads_to_size_divisibility():
    preprocess = ImagePreprocessor(
        pixel_mean=[10.0, 20.0], pixel_std=[2.0, 4.0], size_divisibility=32
    )
    images = [
        torch.full((2, 30, 50), 40, dtype=torch.uint8),
        torch.zeros(2, 33, 20, dtype=torch.uint8),
    ]
    batch = preprocess([{"image": im} for im in images])
    assert batch.tensors.shape == (2, 2, 64, 64)
    assert batch.image_sizes == [(30, 50), (33, 20)]
    # (40 - 10) / 2 and (40 - 20) / 4
    assert torch.all(batch.tensors[0, 0, :30, :50] == 15)
    assert torch.all(batch.tensors[0, 1, :30, :50] == 5)
    assert torch.all(batch.tensors[0, :, 30:] == 0) and torch.all(batch.tensors[1, :, :, 20:] == 0)
    with pytest.raises(ConfigError, match="PIXEL_MEAN"):
        preprocess([{"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}])


def test_padding_is_ignored_in_targets_and_cropped_from_predictions():
    inputs = [{"image": torch.zeros(1, 3, 5), "sem_seg": torch.ones(3, 5, dtype=torch.long)}]
    targets = pad_sem_seg_targets(inputs, (4, 8), ignore_value=255, device=torch.device("cpu"))
    assert torch.all(targets[0, :3, :5] == 1)
    assert torch.all(targets[0, 3:] == 255) and torch.all(targets[0, :, 5:] == 255)
    with pytest.raises(DatasetError, match="sem_seg"):
        pad_sem_seg_targets([{"image": torch.zeros(1, 3, 5)}], (4, 8), 255, torch.device("cpu"))

    padded = torch.zeros(2, 8, 8)
    padded[:, :4, :6] = torch.arange(24.0).view(1, 4, 6)
    torch.testing.assert_close(sem_seg_postprocess(padded, (4, 6), 4, 6), padded[:, :4, :6])
    resized = sem_seg_postprocess(padded, (4, 6), 8, 12)
    assert resized.shape == (2, 8, 12) and resized.min() >= 0  # no padding zeros bled in
    assert resized[0, 0, 0] == 0 and resized[0, -1, -1] == 23


def _shapes_scene(rng: np.random.Generator, height: int, width: int, channels: int):
    """Noisy background, a disc (label 1) and a rectangle (label 2 in 3-class mode)."""
    yy, xx = np.mgrid[:height, :width]
    image = rng.integers(0, 80, (channels, height, width)).astype(np.uint8)
    label = np.zeros((height, width), np.int64)
    y0, x0 = rng.integers(0, height - 16), rng.integers(0, width - 20)
    rectangle = (yy >= y0) & (yy < y0 + 16) & (xx >= x0) & (xx < x0 + 20)
    cy, cx, r = rng.integers(14, height - 14), rng.integers(14, width - 14), rng.integers(8, 13)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    label[rectangle], image[:, rectangle] = 2, 220
    label[disc], image[:, disc] = 1, 140
    return torch.from_numpy(image), torch.from_numpy(label)


def _iou(prediction: torch.Tensor, truth: torch.Tensor, label: int) -> float:
    union = ((prediction == label) | (truth == label)).sum().item()
    return ((prediction == label) & (truth == label)).sum().item() / max(union, 1)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["unet_R_18_tiny.yaml", "unet_R_18_gray_binary_tiny.yaml"])
def test_tiny_unet_overfits_synthetic_shapes(config):
    cfg = _cfg(CONFIGS / "tiny" / config)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(cfg)
    binary = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1
    inputs = []
    for _ in range(3):
        image, label = _shapes_scene(rng, 64, 80, len(cfg.MODEL.PIXEL_MEAN))
        inputs.append({"image": image, "sem_seg": label.clamp(max=1) if binary else label})
    truth = torch.stack([x["sem_seg"] for x in inputs])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ious = []
    for step in range(1, 201):
        model.train()
        loss = model(inputs)["loss_sem_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 and step >= 40:
            model.eval()
            with torch.no_grad():
                logits = torch.stack([o["sem_seg"] for o in model(inputs)])
            prediction = (logits[:, 0] > 0).long() if binary else logits.argmax(dim=1)
            ious = [_iou(prediction, truth, label) for label in ([1] if binary else [1, 2])]
            if min(ious) >= 0.8:
                break
    assert min(ious) >= 0.8, f"foreground IoU {ious} after {step} steps (loss {loss.item():.3f})"


def test_checkpointer_loads_rgb_weights_into_grayscale_model(tmp_path):
    """MODEL.WEIGHTS may be a torchvision ResNet file or an RGB d2seg checkpoint."""
    torch.manual_seed(0)
    gray = build_model(_cfg(CONFIGS / "tiny/unet_R_18_gray_binary_tiny.yaml"))
    torchvision_state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(torchvision_state, tmp_path / "resnet18.pth")
    D2SegCheckpointer(gray).load(str(tmp_path / "resnet18.pth"))
    torch.testing.assert_close(
        gray.backbone.conv1.weight.detach(),
        torchvision_state["conv1.weight"].mean(dim=1, keepdim=True) * 3,
    )
    torch.testing.assert_close(
        gray.backbone.layer3[0].conv2.weight.detach(), torchvision_state["layer3.0.conv2.weight"]
    )

    rgb = build_model(_cfg(CONFIGS / "tiny/unet_R_18_tiny.yaml"))
    torch.save({"model": rgb.state_dict()}, tmp_path / "rgb_model.pth")
    D2SegCheckpointer(gray).load(str(tmp_path / "rgb_model.pth"))
    torch.testing.assert_close(
        gray.backbone.conv1.weight.detach(), rgb.backbone.conv1.weight.mean(dim=1, keepdim=True) * 3
    )
    head = "sem_seg_head.blocks.0.0.weight"
    torch.testing.assert_close(gray.state_dict()[head], rgb.state_dict()[head])
