"""ONNX export: graphs checked against the PyTorch model with onnxruntime (the oracle)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.errors import ConfigError, ExportError
from d2seg.export import (
    computed_resize_inputs,
    convert_to_fp16,
    export_model,
    export_rcnn_onnx,
    export_semantic_onnx,
)
from d2seg.export import verify
from d2seg.export.samples import sample_images
from d2seg.modeling import build_model
from d2seg.modeling.postprocess import detector_postprocess

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny"


def tiny_model(config: str, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(TINY / config))
    cfg.merge_from_list(list(overrides))
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def pixels(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Synthetic scenes as float N×C×H×W pixels 0-255 (integers, as decoded images are)."""
    images = []
    for i in range(batch):
        rgb = render_sample("balloons", seed=seed, size=(height, width), index=i)["image"]
        image = torch.from_numpy(rgb).permute(2, 0, 1).float()
        images.append(image if channels == 3 else image.mean(0, keepdim=True).round())
    return torch.stack(images)


@torch.no_grad()
def torch_logits(model, batch: torch.Tensor) -> np.ndarray:
    outputs = model([{"image": image.to(torch.uint8)} for image in batch])
    return torch.stack([o["sem_seg"] for o in outputs]).numpy()


@pytest.fixture(scope="module")
def unet():
    return tiny_model("unet_R_18_tiny.yaml")[1]


@pytest.fixture(scope="module")
def unet_static(unet, tmp_path_factory):
    path = tmp_path_factory.mktemp("unet") / "model.onnx"
    return export_semantic_onnx(unet, height=128, width=128, path=path)


def test_static_semantic_graph_has_constant_resizes_and_matches_pytorch(unet, unet_static):
    graph = onnx.load(str(unet_static))
    resizes = [n for n in graph.graph.node if n.op_type == "Resize"]
    assert resizes and computed_resize_inputs(graph) == []
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 128, 128]
    batch = pixels(1, 3, 128, 128)
    logits = session(unet_static).run(None, {"image": batch.numpy()})[0]
    assert logits.shape == (1, 3, 128, 128)
    assert np.abs(logits - torch_logits(unet, batch)).max() <= 1e-4
    assert not unet.training  # the export keeps the model's mode


def test_static_graph_pads_and_crops_with_constants_only(tmp_path):
    """72×100 is not a multiple of 32: the graph pads to 96×128 and crops the logits back with
    one Pad and constant Slices, no shape arithmetic (what the C++ lowering needs)."""
    _, model = tiny_model("unet_R_18_gray_binary_tiny.yaml")
    graph = onnx.load(str(export_semantic_onnx(model, height=72, width=100,
                                               path=tmp_path / "m.onnx")))
    ops = {n.op_type for n in graph.graph.node}
    assert {"Pad", "Slice"} <= ops
    assert not ops & {"Shape", "Gather", "ConstantOfShape", "Mod", "Cast", "Reshape", "Size",
                      "Transpose", "Unsqueeze", "Range"}
    constants = {init.name for init in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type in ("Pad", "Slice"):
            assert all(name in constants for name in node.input[1:] if name)
    assert computed_resize_inputs(graph) == []
    assert [o.domain for o in graph.opset_import] == [""]
    batch = pixels(1, 1, 72, 100)
    logits = session(tmp_path / "m.onnx").run(None, {"image": batch.numpy()})[0]
    assert logits.shape == (1, 1, 72, 100)
    assert np.abs(logits - torch_logits(model, batch)).max() <= 1e-4


def test_computed_resize_input_is_reported(unet, tmp_path):
    graph = onnx.load(str(export_semantic_onnx(
        unet, height=64, width=64, path=tmp_path / "d.onnx", dynamic=True)))
    resize = next(n for n in graph.graph.node if n.op_type == "Resize")
    computed = onnx.helper.make_node("Shape", [graph.graph.input[0].name], ["computed_sizes"])
    graph.graph.node.insert(0, computed)
    resize.input[3:] = ["computed_sizes"]
    assert computed_resize_inputs(graph) == [f"{resize.name}: computed_sizes"]


def test_dynamic_semantic_graph_runs_at_other_sizes(unet, tmp_path):
    path = export_semantic_onnx(unet, height=128, width=128, path=tmp_path / "d.onnx", dynamic=True)
    run = session(path)
    for shape in [(2, 3, 96, 160), (1, 3, 75, 50)]:  # 75×50 is padded and cropped in the graph
        batch = pixels(*shape, seed=1)
        logits = run.run(None, {"image": batch.numpy()})[0]
        assert logits.shape == (shape[0], 3, *shape[2:])
        assert np.abs(logits - torch_logits(unet, batch)).max() <= 1e-4


def test_fp16_graph_keeps_float32_io_and_agrees_on_argmax(unet, unet_static, tmp_path):
    path = convert_to_fp16(unet_static, tmp_path / "model_fp16.onnx")
    graph = onnx.load(str(path))
    assert {i.type.tensor_type.elem_type for i in graph.graph.input} == {onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in graph.graph.output} == {onnx.TensorProto.FLOAT}
    assert path.stat().st_size < 0.6 * unet_static.stat().st_size
    batch = pixels(4, 3, 128, 128, seed=2)
    fp16_logits = np.concatenate(
        [session(path).run(None, {"image": image[None].numpy()})[0] for image in batch]
    )
    agreement = (fp16_logits.argmax(1) == torch_logits(unet, batch).argmax(1)).mean()
    assert agreement >= 0.999


def test_gray_binary_unet_exports_every_file_with_its_report(tmp_path):
    cfg, model = tiny_model("unet_R_18_gray_binary_tiny.yaml")
    report = export_model(cfg, model, tmp_path / "out", dynamic=True, fp16=True)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"model.onnx", "model_dynamic.onnx", "model_fp16.onnx", "export_report.json"}
    assert json.loads((tmp_path / "out" / "export_report.json").read_text()) == report
    static = report["files"]["model.onnx"]
    assert static["inputs"] == [{"name": "image", "dtype": "float32", "shape": [1, 1, 128, 128]}]
    assert static["outputs"][0]["shape"] == [1, 1, 128, 128]
    assert report["files"]["model_dynamic.onnx"]["inputs"][0]["shape"] == [
        "batch", 1, "height", "width"]
    assert report["checks"]["model.onnx"]["max_abs_logit_diff"] <= 1e-4
    assert report["checks"]["model_fp16.onnx"]["argmax_agreement"] >= 0.999
    logits = session(tmp_path / "out" / "model.onnx").run(
        None, {"image": pixels(1, 1, 128, 128).numpy()})[0]
    assert np.abs(logits - torch_logits(model, pixels(1, 1, 128, 128))).max() <= 1e-4


FAMILY_CONFIGS = ["unet_VGG11_tiny.yaml", "unet_EffB0_tiny.yaml",
                  "unet_MNV3_small_gray_tiny.yaml", "deeplabv3_MNV3_tiny.yaml",
                  "deeplabv3plus_MNV3_tiny.yaml", "fcn_MNV3_tiny.yaml", "lraspp_MNV3_tiny.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("config", FAMILY_CONFIGS)
def test_every_model_family_exports_static_and_dynamic_graphs_that_match(config, tmp_path):
    """Each backbone × head family: the static graph has constant Resizes only (what the C++
    lowering takes), and both graphs match PyTorch in onnxruntime, the dynamic one at a size off
    the size divisibility."""
    cfg, model = tiny_model(config)
    report = export_model(cfg, model, tmp_path / "out", height=64, width=96, dynamic=True)
    assert all(check["max_abs_logit_diff"] <= 1e-4 for check in report["checks"].values())
    static = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert computed_resize_inputs(static) == []
    channels = len(cfg.MODEL.PIXEL_MEAN)
    batch = pixels(1, channels, 64, 96, seed=3)
    logits = session(tmp_path / "out" / "model.onnx").run(None, {"image": batch.numpy()})[0]
    assert logits.shape == (1, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 64, 96)
    assert np.abs(logits - torch_logits(model, batch)).max() <= 1e-4
    odd = pixels(2, channels, 50, 70, seed=4)  # padded to the size divisibility in the graph
    dynamic = session(tmp_path / "out" / "model_dynamic.onnx").run(None, {"image": odd.numpy()})[0]
    assert np.abs(dynamic - torch_logits(model, odd)).max() <= 1e-4


def test_failed_verification_raises_and_writes_nothing(unet, monkeypatch, tmp_path):
    cfg = tiny_model("unet_R_18_tiny.yaml")[0]
    monkeypatch.setattr(verify, "LOGIT_ATOL", -1.0)  # any difference, even 0, now fails
    with pytest.raises(ExportError, match="max |Δlogit|"):
        export_model(cfg, unet, tmp_path / "out", height=64, width=64)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_refused(unet, tmp_path):
    cfg = tiny_model("unet_R_18_tiny.yaml")[0]
    with pytest.raises(ConfigError, match="already exists"):
        export_model(cfg, unet, tmp_path, height=64, width=64)


def onnx_instances(path, image: torch.Tensor) -> dict:
    run = session(path)
    outputs = run.run(None, {"image": image[None].numpy()})
    named = {o.name: torch.from_numpy(v) for o, v in zip(run.get_outputs(), outputs)}
    height, width = image.shape[1:]
    return detector_postprocess(named, (height, width), height, width)


@torch.no_grad()
def test_mask_rcnn_matches_pytorch_and_handles_no_detections(tmp_path):
    cfg, model = tiny_model("mask_rcnn_R_18_tiny.yaml")
    path = export_rcnn_onnx(model, height=96, width=128, path=tmp_path / "m.onnx")
    names = [o.name for o in session(path).get_outputs()]
    assert names == ["boxes", "labels", "scores", "masks"]
    image = pixels(1, 3, 96, 128)[0]
    expected = model([{"image": image.to(torch.uint8)}])[0]["instances"]
    actual = onnx_instances(path, image)
    assert len(expected["scores"]) > 0
    torch.testing.assert_close(actual["boxes"], expected["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(actual["scores"], expected["scores"], atol=1e-3, rtol=0)
    assert torch.equal(actual["classes"], expected["classes"])
    assert (actual["masks"] != expected["masks"]).float().mean() < 1e-3

    cfg, model = tiny_model("mask_rcnn_R_18_tiny.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0")
    path = export_rcnn_onnx(model, height=96, width=128, path=tmp_path / "none.onnx")
    assert len(model([{"image": image.to(torch.uint8)}])[0]["instances"]["scores"]) == 0
    outputs = session(path).run(None, {"image": image[None].numpy()})
    assert [o.shape for o in outputs] == [(0, 4), (0,), (0,), (0, 1, 28, 28)]
    assert onnx_instances(path, image)["masks"].shape == (0, 96, 128)
    check = verify.check_rcnn(model, path, [image.permute(1, 2, 0).to(torch.uint8).numpy()])
    assert check["matched"] == 1.0 and check["images"][0]["onnx_detections"] == 0


def test_cascade_rcnn_exports_and_matches_pytorch(tmp_path):
    """Three box stages traced for one size; images with other detections still match (the
    same boxes and scores; order among equal scores may differ)."""
    _, model = tiny_model("mask_rcnn_R_18_tiny.yaml", "MODEL.ROI_HEADS.NAME", "CascadeROIHeads",
                          "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True")
    path = export_rcnn_onnx(model, height=96, width=128, path=tmp_path / "cascade.onnx")
    image = pixels(1, 3, 96, 128)[0]
    for probe in (image, 255 - image):
        expected = model([{"image": probe.to(torch.uint8)}])[0]["instances"]
        actual = onnx_instances(path, probe)
        assert len(actual["scores"]) == len(expected["scores"]) > 0
        torch.testing.assert_close(actual["scores"].sort().values,
                                   expected["scores"].sort().values, atol=1e-5, rtol=0)
        nearest = torch.cdist(expected["boxes"], actual["boxes"]).min(dim=1).values
        assert nearest.max() < 1e-3


def test_mask_rcnn_fp16_trunk_keeps_detection_postprocessing_fp32(tmp_path):
    cfg, model = tiny_model("mask_rcnn_R_18_tiny.yaml")
    report = export_model(cfg, model, tmp_path / "out", height=96, width=128, fp16=True)
    fp16 = onnx.load(str(tmp_path / "out" / "model_fp16.onnx"))
    half = {i.name for i in fp16.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    readers = {n.op_type for n in fp16.graph.node if half & set(n.input)}
    assert readers == {"Conv"}  # trunk convolutions only; heads, NMS, RoiAlign read fp32
    sizes = {name: f["bytes"] for name, f in report["files"].items()}
    assert sizes["model_fp16.onnx"] < 0.7 * sizes["model.onnx"]
    assert report["checks"]["model_fp16.onnx"]["matched"] >= 0.95
    image = pixels(1, 3, 96, 128)[0]
    expected = onnx_instances(tmp_path / "out" / "model.onnx", image)
    actual = onnx_instances(tmp_path / "out" / "model_fp16.onnx", image)
    assert actual["boxes"].dtype == torch.float32 and len(actual["boxes"]) == len(expected["boxes"])


def test_pointrend_and_panoptic_are_refused_with_the_reason(tmp_path):
    cfg, model = tiny_model("pointrend_R_18_tiny.yaml")
    with pytest.raises(ConfigError, match="'PointRendMaskHead' cannot be exported to ONNX"):
        export_rcnn_onnx(model, height=96, width=96, path=tmp_path / "p.onnx")
    with pytest.raises(ConfigError, match="'PointRendMaskHead' cannot be exported to ONNX"):
        export_model(cfg, model, tmp_path / "out")
    cfg, model = tiny_model("panoptic_unet_R_18_tiny.yaml")
    with pytest.raises(ConfigError, match="PanopticUNet has no ONNX export"):
        export_model(cfg, model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_samples_come_from_the_folder_then_datasets_test_then_synthetic(tmp_path):
    cfg = tiny_model("unet_R_18_gray_binary_tiny.yaml")[0]
    gray = np.arange(40 * 60, dtype=np.uint8).reshape(40, 60)
    cv2.imwrite(str(tmp_path / "b.png"), gray)
    cv2.imwrite(str(tmp_path / "a.png"), 255 - gray)
    images, source = sample_images(cfg, tmp_path, 64, 64)
    assert source == str(tmp_path) and [im[0, 0, 0] for im in images] == [255, 0]

    coco = {"images": [{"id": 1, "file_name": "b.png", "height": 40, "width": 60}],
            "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "test.json").write_text(json.dumps(coco))
    cfg.DATASETS.TEST = (str(tmp_path / "test.json"),)
    images, source = sample_images(cfg, None, 64, 64)
    assert source.startswith("DATASETS.TEST") and np.array_equal(images[0][:, :, 0], gray)

    cfg.DATASETS.TEST = (str(tmp_path / "missing.json"),)
    images, source = sample_images(cfg, None, 64, 48)
    assert source.startswith("synthetic") and images[0].shape == (64, 48, 1)
    with pytest.raises(ConfigError, match="--samples"):
        sample_images(cfg, tmp_path / "missing", 64, 64)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "deploy" / "export_onnx.py"), *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


@pytest.mark.slow
def test_cli_exports_a_checkpoint_and_rejects_a_corrupt_one(shared_data, tmp_path):
    cfg, model = tiny_model("mask_rcnn_R_18_tiny.yaml")
    D2SegCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    weights = tmp_path / "model_final.pth"
    config = str(TINY / "mask_rcnn_R_18_tiny.yaml")
    samples = shared_data / "balloon" / "train"
    result = run_cli("--config-file", config, "MODEL.WEIGHTS", str(weights),
                     "--output", str(tmp_path / "out"), "--dynamic", "--samples", str(samples))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["samples"] == str(samples)
    assert set(report["files"]) == {"model.onnx", "model_dynamic.onnx"}
    # The dynamic graph was checked on the real photos at their test-time size (short side 96).
    shapes = [c["input_shape"] for c in report["checks"]["model_dynamic.onnx"]["images"]]
    assert [1, 3, 96, 144] in shapes

    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_cli("--config-file", config, "MODEL.WEIGHTS", str(weights),
                     "--output", str(tmp_path / "bad"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "truncated or corrupt" in result.stderr
    assert not (tmp_path / "bad").exists()

    result = run_cli("--config-file", config, "MODEL.WEIGHTS", str(weights))  # no --output
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the following arguments are required: --output; fix: see python "
        "deploy/export_onnx.py --help"
    ]


def test_pointrend_semantic_exports_a_static_graph_and_refuses_a_dynamic_one(tmp_path):
    """PointRendSemSegHead's subdivision (TopK, GatherElements, ScatterElements, GridSample)
    exports; the number of pixels it re-predicts is fixed at the traced size, so only static."""
    _, model = tiny_model("pointrend_semantic_R_18_tiny.yaml")
    path = export_semantic_onnx(model, height=64, width=96, path=tmp_path / "p.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"TopK", "ScatterElements", "GridSample"} <= ops
    batch = pixels(1, 3, 64, 96)
    (logits,) = session(path).run(None, {"image": batch.numpy()})
    np.testing.assert_allclose(logits, torch_logits(model, batch), atol=1e-3, rtol=1e-3)
    with pytest.raises(ConfigError, match="'PointRendSemSegHead' cannot be exported with dynamic"):
        export_semantic_onnx(model, height=64, width=96, path=tmp_path / "d.onnx", dynamic=True)
    assert not (tmp_path / "d.onnx").exists()
