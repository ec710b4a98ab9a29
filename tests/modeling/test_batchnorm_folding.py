"""BatchNorm folding at inference (d2seg.modeling.batchnorm_folding): the folded model's outputs
equal the plain model's, and the folded copy follows every weight change.

Oracle: the same model called with gradients enabled, which runs its own BatchNorms (the folded
copy is used only under ``no_grad``/``inference_mode``). BatchNorm statistics and affine
parameters are randomised first, so folding is far from the identity.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, box_iou

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.modeling import build_model
from d2seg.modeling.batchnorm_folding import fold_batchnorm, inference_module

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny"
NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


def randomise_norms(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NORMS):
                channels = m.running_mean.shape[0]
                if m.weight is not None:  # affine
                    m.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                    m.bias.copy_(torch.randn(channels, generator=generator) * 0.2)
                m.running_mean.copy_(torch.randn(channels, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(channels, generator=generator) * 1.5 + 0.25)
    return model


def tiny_model(name: str, *overrides, seed: int = 0) -> nn.Module:
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY / name))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    torch.manual_seed(seed)
    return randomise_norms(build_model(cfg), seed).eval()


def image_inputs(size: int, channels: int = 3) -> list[dict]:
    sample = render_sample("balloons", seed=3, size=(size, size))
    image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
    return [{"image": image[:channels].contiguous()}]


def plain(model: nn.Module, inputs: list[dict]) -> list[dict]:
    with torch.enable_grad():
        return [{k: _detach(v) for k, v in out.items()} for out in model(inputs)]


def _detach(value):
    return {k: v.detach() for k, v in value.items()} if isinstance(value, dict) else value.detach()


def folded(model: nn.Module, inputs: list[dict]) -> list[dict]:
    with torch.inference_mode():
        return model(inputs)


def norms_left(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, NORMS)]


def assert_close_logits(expected: torch.Tensor, actual: torch.Tensor) -> None:
    scale = expected.abs().max()
    assert (actual - expected).abs().max() <= 1e-4 * scale


SEMANTIC = [
    ("unet_R_18_tiny.yaml", []),
    ("unet_VGG11_tiny.yaml", []),
    ("unet_EffB0_tiny.yaml", []),
    ("lraspp_MNV3_tiny.yaml", []),
    ("fcn_MNV3_tiny.yaml", []),
    ("deeplabv3_MNV3_tiny.yaml", []),
    # The separable convs end in a nested Sequential (depthwise, pointwise) before their norm.
    ("deeplabv3plus_MNV3_tiny.yaml", ["MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV", True]),
]


@pytest.mark.parametrize("config, overrides", SEMANTIC, ids=[c for c, _ in SEMANTIC])
def test_folded_semantic_inference_equals_the_plain_model(config, overrides):
    model = tiny_model(config, *overrides)
    inputs = image_inputs(96, channels=len(model.preprocessor.pixel_mean))
    expected = plain(model, inputs)[0]["sem_seg"]
    actual = folded(model, inputs)[0]["sem_seg"]
    with torch.no_grad():
        backbone, head = inference_module(model.backbone), inference_module(model.sem_seg_head)
    assert backbone is not model.backbone and head is not model.sem_seg_head
    assert norms_left(backbone) == norms_left(head) == []
    assert norms_left(model) != []  # the model itself keeps its BatchNorms
    assert_close_logits(expected, actual)


def same_detections(expected: dict, actual: dict) -> None:
    """Matched as sets: each expected detection has one of the same class at IoU > 0.9, within
    1e-3 px, whose mask has IoU ≥ 0.999 with its own."""
    assert len(expected["scores"]) == len(actual["scores"]) > 0
    iou = box_iou(expected["boxes"], actual["boxes"])
    iou[expected["classes"][:, None] != actual["classes"][None]] = 0
    best, match = iou.max(dim=1)
    assert (best > 0.9).all() and len(set(match.tolist())) == len(match)
    assert (expected["boxes"] - actual["boxes"][match]).abs().max() <= 1e-3
    torch.testing.assert_close(actual["scores"][match], expected["scores"], rtol=1e-4, atol=1e-5)
    ours, theirs = expected["masks"], actual["masks"][match]
    inter = (ours & theirs).flatten(1).sum(1)
    union = (ours | theirs).flatten(1).sum(1)
    assert ((union == 0) | (inter >= 0.999 * union)).all()


def test_folded_mask_rcnn_gives_the_same_detections():
    model = tiny_model("mask_rcnn_R_18_tiny.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0)
    inputs = image_inputs(128)
    same_detections(plain(model, inputs)[0]["instances"], folded(model, inputs)[0]["instances"])
    with torch.no_grad():
        assert norms_left(inference_module(model.backbone)) == []


def test_frozen_batchnorm_trunk_is_folded():
    model = tiny_model("unet_R_18_tiny.yaml", "MODEL.RESNETS.NORM", "FrozenBN",
                       "MODEL.BACKBONE.FREEZE_AT", 2)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    inputs = image_inputs(64)
    assert_close_logits(plain(model, inputs)[0]["sem_seg"], folded(model, inputs)[0]["sem_seg"])
    with torch.no_grad():
        assert norms_left(inference_module(model.backbone)) == []


def test_folded_copy_follows_loaded_weights_training_and_dtype():
    model = tiny_model("unet_R_18_tiny.yaml")
    other = tiny_model("unet_R_18_tiny.yaml", seed=1)
    inputs = image_inputs(64)
    before = folded(model, inputs)[0]["sem_seg"]

    model.load_state_dict(other.state_dict())
    after_load = folded(model, inputs)[0]["sem_seg"]
    assert_close_logits(plain(other, inputs)[0]["sem_seg"], after_load)
    assert not torch.allclose(before, after_load)

    # A training step in train mode, back to eval: the copy is rebuilt from the new weights.
    model.train()
    assert inference_module(model.backbone) is model.backbone
    targets = torch.zeros(64, 64, dtype=torch.long)
    loss = sum(model([{**inputs[0], "sem_seg": targets}]).values())
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    model.eval()
    after_step = folded(model, inputs)[0]["sem_seg"]
    assert_close_logits(plain(model, inputs)[0]["sem_seg"], after_step)
    assert not torch.allclose(after_load, after_step)

    model.double()
    in_float64 = folded(model, inputs)[0]["sem_seg"]
    assert in_float64.dtype == torch.float64
    torch.testing.assert_close(in_float64, plain(model, inputs)[0]["sem_seg"])


def test_plain_modules_run_whenever_batchnorm_may_be_needed():
    model = tiny_model("unet_R_18_tiny.yaml")
    with torch.enable_grad():  # eval mode, but differentiable: the model's own modules
        assert inference_module(model.backbone) is model.backbone
    with torch.no_grad():
        assert inference_module(model.backbone) is not model.backbone
        model.backbone.layer1[0].bn1.train()  # one BatchNorm back in training mode
        assert inference_module(model.backbone) is model.backbone
        model.eval()
        handle = model.backbone.layer2.register_forward_hook(lambda *args: None)
        assert inference_module(model.backbone) is model.backbone
        handle.remove()
        assert inference_module(model.backbone) is not model.backbone
    keys = set(model.state_dict())
    folded(model, image_inputs(64))
    assert set(model.state_dict()) == keys


def test_only_pairs_whose_conv_feeds_the_norm_alone_are_folded():
    torch.manual_seed(0)
    batch_statistics = nn.BatchNorm2d(4, track_running_stats=False)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), randomise_norms(nn.BatchNorm2d(4), 0), nn.ReLU(),
        nn.Conv2d(4, 4, 1), batch_statistics,
        randomise_norms(nn.BatchNorm2d(4), 1),  # after a norm, not a conv
        nn.Conv2d(4, 4, 1, bias=True), randomise_norms(nn.BatchNorm2d(4, affine=False), 2),
    ).eval()
    twin = fold_batchnorm(net)
    assert [type(m) for m in twin] == [nn.Conv2d, nn.Identity, nn.ReLU, nn.Conv2d,
                                       nn.BatchNorm2d, nn.BatchNorm2d, nn.Conv2d, nn.Identity]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=1e-4, atol=1e-5)
    assert net[1].__class__ is nn.BatchNorm2d  # the source keeps its layers
