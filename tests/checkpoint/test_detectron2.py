"""Detectron2 model-zoo weights: Caffe2/MSRA names and Detectron2 module names land on the right
d2seg parameters; a .pkl holding code is refused without running it."""

import pickle
import re

import numpy as np
import pytest
import torch
from torch import nn

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.checkpoint.detectron2 import is_detectron2_state_dict, load_pkl
from d2seg.config import get_cfg
from d2seg.errors import CheckpointError
from d2seg.modeling import build_model
from d2seg.modeling.backbone.resnet import ResNet

BN_SUFFIX = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
BRANCH = {"1": "2a", "2": "2b", "3": "2c"}


def caffe2_name(torchvision_name: str) -> str:
    """The MSRA/Caffe2 name of a torchvision ResNet parameter, written from the Caffe2 naming
    scheme (res<stage>_<block>_branch2{a,b,c} / branch1, _w, _bn_{s,b,rm,riv})."""
    if torchvision_name == "conv1.weight":
        return "conv1_w"
    stem = re.match(r"bn1\.(\w+)$", torchvision_name)
    if stem:
        return f"res_conv1_bn_{BN_SUFFIX[stem[1]]}"
    layer, block, rest = re.match(r"layer(\d)\.(\d+)\.(.*)$", torchvision_name).groups()
    prefix = f"res{int(layer) + 1}_{block}"
    conv = re.match(r"conv(\d)\.weight$", rest)
    if conv:
        return f"{prefix}_branch{BRANCH[conv[1]]}_w"
    bn = re.match(r"bn(\d)\.(\w+)$", rest)
    if bn:
        return f"{prefix}_branch{BRANCH[bn[1]]}_bn_{BN_SUFFIX[bn[2]]}"
    if rest == "downsample.0.weight":
        return f"{prefix}_branch1_w"
    return f"{prefix}_branch1_bn_{BN_SUFFIX[rest.split('.')[-1]]}"


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = ResNet(depth=50, in_channels=3, out_features=["res5"], norm="FrozenBN")


def _write_pkl(path, data):
    with open(path, "wb") as f:
        pickle.dump(data, f)


def test_caffe2_named_resnet_lands_on_the_right_parameters(tmp_path):
    model = Trunk()
    own = model.backbone.state_dict()
    generator = torch.Generator().manual_seed(0)
    values = {k: torch.randn(v.shape, generator=generator) for k, v in own.items()}
    blobs = {caffe2_name(k): v.numpy() for k, v in values.items()}
    blobs["fc1000_w"] = np.zeros((1000, 2048), dtype=np.float32)  # the classifier: unused
    _write_pkl(tmp_path / "R-50.pkl", {"blobs": blobs})

    extra = D2SegCheckpointer(model).load(str(tmp_path / "R-50.pkl"))
    for key, value in values.items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, msg=key)
    report = extra["detectron2_report"]
    assert len(report.loaded) == len(values) and not report.missing and not report.skipped
    assert report.unused == ["fc1000.weight"]


def test_a_pkl_holding_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _write_pkl(tmp_path / "evil.pkl", {"model": {"x": Payload()}})
    with pytest.raises(CheckpointError, match=r"io.open, not plain data.*it was not run"):
        load_pkl(str(tmp_path / "evil.pkl"))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="evil.pkl"):
        D2SegCheckpointer(Trunk()).load(str(tmp_path / "evil.pkl"))
    assert not marker.exists()


def _tiny_rcnn(*overrides) -> nn.Module:
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/mask_rcnn_R_18_tiny.yaml")
    cfg.merge_from_list(list(overrides))
    torch.manual_seed(0)
    return build_model(cfg)


def test_detectron2_module_names_and_class_order_are_mapped(tmp_path):
    """A Detectron2-trained model: FPN, RPN, box and mask heads renamed; Detectron2's background
    score (last) becomes torchvision's first, and its K box/mask outputs get a background slot."""
    model = _tiny_rcnn()
    own = model.state_dict()
    num_classes, fc_dim = 2, own["roi_heads.box_predictor.cls_score.weight"].shape[1]
    d2 = {
        "backbone.bottom_up.res3.1.conv2.weight": torch.randn_like(
            own["backbone.bottom_up.layer2.1.conv2.weight"]),
        "backbone.fpn_lateral3.weight": torch.randn_like(own["backbone.fpn.inner_blocks.1.0.weight"]),
        "backbone.fpn_output5.bias": torch.randn_like(own["backbone.fpn.layer_blocks.3.0.bias"]),
        "proposal_generator.rpn_head.objectness_logits.weight": torch.randn_like(
            own["rpn.head.cls_logits.weight"]),
        "roi_heads.box_head.fc2.weight": torch.randn_like(own["roi_heads.box_head.3.weight"]),
        "roi_heads.box_predictor.cls_score.weight": torch.randn(num_classes + 1, fc_dim),
        "roi_heads.box_predictor.bbox_pred.weight": torch.randn(num_classes * 4, fc_dim),
        "roi_heads.mask_head.mask_fcn2.weight": torch.randn_like(
            own["roi_heads.mask_head.convs.1.0.weight"]),
        "roi_heads.mask_head.predictor.bias": torch.randn(num_classes),
    }
    torch.save({"model": d2}, tmp_path / "model_final.pth")
    extra = D2SegCheckpointer(model).load(str(tmp_path / "model_final.pth"))
    state = model.state_dict()
    assert len(extra["detectron2_report"].loaded) == len(d2)
    for ours, theirs in (
        ("backbone.bottom_up.layer2.1.conv2.weight", "backbone.bottom_up.res3.1.conv2.weight"),
        ("backbone.fpn.inner_blocks.1.0.weight", "backbone.fpn_lateral3.weight"),
        ("backbone.fpn.layer_blocks.3.0.bias", "backbone.fpn_output5.bias"),
        ("rpn.head.cls_logits.weight", "proposal_generator.rpn_head.objectness_logits.weight"),
        ("roi_heads.box_head.3.weight", "roi_heads.box_head.fc2.weight"),
        ("roi_heads.mask_head.convs.1.0.weight", "roi_heads.mask_head.mask_fcn2.weight"),
    ):
        torch.testing.assert_close(state[ours], d2[theirs], msg=ours)
    scores = d2["roi_heads.box_predictor.cls_score.weight"]
    torch.testing.assert_close(state["roi_heads.box_predictor.cls_score.weight"],
                               torch.cat([scores[-1:], scores[:-1]]))
    deltas = state["roi_heads.box_predictor.bbox_pred.weight"]
    assert not deltas[:4].any()
    torch.testing.assert_close(deltas[4:], d2["roi_heads.box_predictor.bbox_pred.weight"])
    mask_bias = state["roi_heads.mask_head.predictor.mask_fcn_logits.bias"]
    assert mask_bias[0] == 0
    torch.testing.assert_close(mask_bias[1:], d2["roi_heads.mask_head.predictor.bias"])


def _load_detectron2(model: nn.Module, d2: dict, tmp_path) -> dict:
    """Load ``d2`` plus an RPN tensor (what makes a file Detectron2's) as a model_final.pth."""
    d2["proposal_generator.rpn_head.objectness_logits.bias"] = torch.zeros_like(
        model.state_dict()["rpn.head.cls_logits.bias"])
    torch.save({"model": d2}, tmp_path / "model_final.pth")
    return D2SegCheckpointer(model).load(str(tmp_path / "model_final.pth"))


def test_fpn_norm_names_land_on_the_fpn_norm_layers(tmp_path):
    """MODEL.FPN.NORM GN: the lateral and output convs lose their bias and gain a GroupNorm;
    Detectron2's fpn_lateral*/fpn_output*.norm.* tensors load onto it."""
    model = _tiny_rcnn("MODEL.FPN.NORM", "GN")
    own = model.state_dict()
    assert "backbone.fpn.inner_blocks.0.0.bias" not in own
    assert isinstance(model.backbone.fpn.layer_blocks[3][1], nn.GroupNorm)
    pairs = {
        "backbone.fpn_lateral2.weight": "backbone.fpn.inner_blocks.0.0.weight",
        "backbone.fpn_lateral2.norm.weight": "backbone.fpn.inner_blocks.0.1.weight",
        "backbone.fpn_lateral2.norm.bias": "backbone.fpn.inner_blocks.0.1.bias",
        "backbone.fpn_output5.weight": "backbone.fpn.layer_blocks.3.0.weight",
        "backbone.fpn_output5.norm.weight": "backbone.fpn.layer_blocks.3.1.weight",
    }
    d2 = {theirs: torch.randn_like(own[ours]) for theirs, ours in pairs.items()}
    extra = _load_detectron2(model, d2, tmp_path)
    assert sorted(extra["detectron2_report"].loaded) == sorted(
        [*pairs.values(), "rpn.head.cls_logits.bias"])
    state = model.state_dict()
    for theirs, ours in pairs.items():
        torch.testing.assert_close(state[ours], d2[theirs], msg=ours)


def test_cascade_stage_names_land_on_their_stage(tmp_path):
    """roi_heads.box_head.<k>.* and box_predictor.<k>.* go to stage k; each stage's background
    score moves first; class-agnostic deltas (4 rows) keep their shape."""
    model = _tiny_rcnn("MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
                       "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True)
    own = model.state_dict()
    d2 = {}
    for k in range(3):
        d2[f"roi_heads.box_head.{k}.fc1.weight"] = torch.randn_like(
            own[f"roi_heads.box_head.{k}.1.weight"])
        d2[f"roi_heads.box_head.{k}.fc2.bias"] = torch.randn_like(
            own[f"roi_heads.box_head.{k}.3.bias"])
        d2[f"roi_heads.box_predictor.{k}.cls_score.bias"] = torch.randn(3)
        d2[f"roi_heads.box_predictor.{k}.bbox_pred.weight"] = torch.randn_like(
            own[f"roi_heads.box_predictor.{k}.bbox_pred.weight"])
    d2["roi_heads.box_head.fc1.weight"] = d2["roi_heads.box_head.0.fc1.weight"]  # no stage
    extra = _load_detectron2(model, d2, tmp_path)
    report = extra["detectron2_report"]
    assert len(report.loaded) == 13 and report.unused == ["roi_heads.box_head.fc1.weight"]
    state = model.state_dict()
    for k in range(3):
        torch.testing.assert_close(state[f"roi_heads.box_head.{k}.1.weight"],
                                   d2[f"roi_heads.box_head.{k}.fc1.weight"])
        torch.testing.assert_close(state[f"roi_heads.box_head.{k}.3.bias"],
                                   d2[f"roi_heads.box_head.{k}.fc2.bias"])
        scores = d2[f"roi_heads.box_predictor.{k}.cls_score.bias"]
        torch.testing.assert_close(state[f"roi_heads.box_predictor.{k}.cls_score.bias"],
                                   torch.cat([scores[-1:], scores[:-1]]))
        torch.testing.assert_close(state[f"roi_heads.box_predictor.{k}.bbox_pred.weight"],
                                   d2[f"roi_heads.box_predictor.{k}.bbox_pred.weight"])


def test_a_d2seg_checkpoint_is_not_taken_for_a_detectron2_one(tmp_path):
    model = _tiny_rcnn()
    assert not is_detectron2_state_dict(model.state_dict())
    torch.save({"model": model.state_dict()}, tmp_path / "own.pth")
    again = _tiny_rcnn()
    for p in again.parameters():
        p.data.zero_()
    extra = D2SegCheckpointer(again).load(str(tmp_path / "own.pth"))
    assert "detectron2_report" not in extra
    for (name, ours), theirs in zip(again.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=name)
