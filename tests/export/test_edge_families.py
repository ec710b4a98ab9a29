"""The model families of issue 13 lowered to C++: torchvision's MobileNetV3 / EfficientNet
blocks (depthwise, Hardswish, SiLU, squeeze-excite), DeepLab's ASPP (dilations, image pooling
resized from 1×1), LR-ASPP and a VGG-style ceil-mode pooling stack, float parity with
onnxruntime within 1e-4, and int8 argmax agreement on a trained MobileNetV3 model."""


import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.lraspp import LRASPPHead

from d2seg.data.synthetic import render_sample
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.harness import load_model
from d2seg.export.onnx import _trace_to_onnx

pytestmark = [pytest.mark.needs_tools("g++"),
              pytest.mark.slow]

SIZE = 64


class Segmenter(nn.Module):
    """pixels 0-255 → normalise → trunk → head → 1×1 logits → bilinear to the input size:
    the shape of a d2seg semantic export over any torchvision trunk."""

    def __init__(self, trunk: nn.Module, head: nn.Module, channels: int, classes: int = 2):
        super().__init__()
        self.trunk, self.head = trunk, head
        self.predictor = nn.Conv2d(channels, classes, 1)

    def forward(self, x):
        logits = self.predictor(self.head(self.trunk((x - 128.0) / 64.0)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class LRASPP(nn.Module):
    def __init__(self):
        super().__init__()
        self.low, self.high = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1)
        self.head = LRASPPHead(8, 16, 3, 32)

    def forward(self, x):
        low = self.low(x / 255.0)
        return self.head({"low": low, "high": self.high(low)})


FAMILIES = {
    "mobilenet_v3_small": lambda: Segmenter(torchvision.models.mobilenet_v3_small().features,
                                            nn.Identity(), 576),
    "mobilenet_v3_large_0.5": lambda: Segmenter(
        torchvision.models.mobilenet_v3_large(width_mult=0.5).features, nn.Identity(), 480),
    "efficientnet_b0": lambda: Segmenter(torchvision.models.efficientnet_b0().features[:5],
                                         nn.Identity(), 80),
    "deeplab_aspp": lambda: Segmenter(
        nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 32, 3, 2, 1, groups=4), nn.BatchNorm2d(32), nn.ReLU()),
        ASPP(32, [2, 4, 6], 16), 16),
    "lraspp": LRASPP,
    "vgg_ceil_pool": lambda: Segmenter(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
                      nn.MaxPool2d(2, 2, ceil_mode=True)),
        nn.Identity(), 8),
}


def _export(model: nn.Module, path) -> str:
    model.eval()
    return _trace_to_onnx(model, torch.full((1, 3, SIZE, SIZE), 128.0), path, ["logits"], None,
                          17, fold_static=True)


def _onnxruntime(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _sample(index: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 1×3×H×W pixels, long H×W labels: 1 = car)."""
    sample = render_sample("carvana", seed=1, size=(SIZE, SIZE), index=index)
    return (sample["image"].transpose(2, 0, 1)[None].astype(np.float32),
            sample["masks"].any(axis=0).astype(np.int64))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_lowers_and_matches_onnxruntime_in_float(tmp_path, family):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    for module in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path = _export(model, tmp_path / "model.onnx")
    lower_onnx_to_cpp(path, tmp_path / "fp32", name="family")
    compiled = load_model(tmp_path / "fp32", flags=("-O1",))
    for index in range(2):
        x, _ = _sample(index)
        expected = _onnxruntime(path, x)
        assert np.abs(expected).max() > 1e-2  # a signal, not a vanishing output
        assert np.abs(compiled(x) - expected).max() <= 1e-4


def test_trained_mobilenet_v3_int8_agrees_with_float(tmp_path):
    """MobileNetV3-small at stride 16 (depthwise, Hardswish, squeeze-excite) trained for 150
    Adam steps on synthetic cars; BatchNorm statistics re-measured on the training batch. Every
    node runs on int8 (the only float kernels are the graph's edges)."""
    torch.manual_seed(0)
    model = Segmenter(torchvision.models.mobilenet_v3_small().features[:9], nn.Identity(), 48)
    samples = [_sample(i) for i in range(16)]
    x = torch.from_numpy(np.concatenate([s[0] for s in samples]))
    y = torch.from_numpy(np.stack([s[1] for s in samples]))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    with torch.no_grad():
        model(x)
    path = _export(model, tmp_path / "model.onnx")
    calib = tmp_path / "calib" / "nested"  # --calib looks into subfolders
    calib.mkdir(parents=True)
    for index in range(16, 20):
        image = _sample(index)[0][0].transpose(1, 2, 0).astype(np.uint8)
        cv2.imwrite(str(calib / f"{index}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    lower_onnx_to_cpp(path, tmp_path / "int8", name="mnv3_q", int8=True,
                      calib_dir=tmp_path / "calib")
    source = (tmp_path / "int8" / "mnv3_q.cpp").read_text()
    float_kernels = {line.split("(")[0].strip() for line in source.splitlines()
                     if "_f32(" in line}
    assert float_kernels == {"quantize_f32", "dequantize_f32"}
    assert "depthwise_conv2d_s8(" in source and "lookup_s8(" in source and "mul_s8(" in source
    quantized = load_model(tmp_path / "int8", flags=("-O1",))
    agree = []
    for index in range(20, 26):
        x, labels = _sample(index)
        expected = _onnxruntime(path, x).argmax(1)
        assert 0 < expected.mean() < 1
        agree.append((quantized(x).argmax(1) == expected).mean())
    assert np.mean(agree) >= 0.99
