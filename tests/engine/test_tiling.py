"""Tiled inference: tiles cover the image, blended logits have no seams, and objects cut by
tile borders come back whole (nmm) or as their best part (nms).

The "models" here are exact functions of the pixels, so every expected value is known: a
per-pixel logit map, and a detector that reports each connected bright region of its input.
"""

import cv2
import numpy as np
import pytest
import torch

from d2seg.engine.tile_layout import blend_window, needs_tiling, tile_windows
from d2seg.engine.tiling import TiledPredictor
from d2seg.errors import ConfigError


class _Model:
    combine_enabled = False


class PixelLogits:
    """A semantic "model": 2 logits per pixel, (128 - v, v - 128) of the first channel."""

    model = _Model()

    def predict_batch(self, images, format=None):
        out = []
        for image in images:
            v = torch.from_numpy(image[:, :, 0].astype(np.float32)) - 128
            out.append({"sem_seg": torch.stack([-v, v])})
        return out

    def __call__(self, image, format=None):
        return self.predict_batch([image])[0]


class BlobDetector:
    """An instance "model": every 8-connected region of pixels > 0 is one object of class 0,
    scored by its area (so a bigger part of a cut object scores higher)."""

    model = _Model()

    def predict_batch(self, images, format=None):
        out = []
        for image in images:
            count, labels = cv2.connectedComponents((image[:, :, 0] > 0).astype(np.uint8))
            masks = torch.from_numpy(np.stack([labels == k for k in range(1, count)])
                                     if count > 1 else np.zeros((0, *labels.shape), bool))
            boxes = []
            for mask in masks.numpy():
                ys, xs = np.nonzero(mask)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            out.append({"instances": {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": masks.flatten(1).sum(1).float() / masks[0].numel() if len(masks)
                else torch.zeros(0),
                "classes": torch.zeros(len(masks), dtype=torch.long),
                "masks": masks,
            }})
        return out

    def __call__(self, image, format=None):
        return self.predict_batch([image])[0]


def test_tiles_cover_the_image_with_the_requested_overlap():
    windows = tile_windows(300, 500, 128, 0.25)
    covered = np.zeros((300, 500), int)
    for y0, x0, y1, x1 in windows:
        assert (y1 - y0, x1 - x0) == (128, 128)
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    starts = sorted({x0 for _, x0, _, _ in windows})
    assert starts[1] - starts[0] == 96  # 128 × (1 - 0.25)
    assert max(x1 for *_, x1 in windows) == 500  # the last tile is flush with the edge
    assert tile_windows(50, 60, 128, 0.25) == [(0, 0, 50, 60)]
    with pytest.raises(ConfigError, match="overlap"):
        tile_windows(300, 500, 128, 1.0)


def test_blend_window_is_highest_in_the_centre_and_never_zero():
    window = blend_window(64, 64)
    assert window.min() > 0
    assert window[32, 32] == window.max()
    assert window[0, 0] < 0.01 * window[32, 32]


def test_tiled_logits_equal_the_whole_image_for_a_per_pixel_model():
    image = np.random.default_rng(0).integers(0, 255, (200, 330, 1), dtype=np.uint8)
    model = PixelLogits()
    tiled = TiledPredictor(model, tile=64, overlap=0.25, batch_size=3)(image)
    torch.testing.assert_close(tiled["sem_seg"], model(image)["sem_seg"])


def _two_objects_image() -> np.ndarray:
    image = np.zeros((160, 240, 1), np.uint8)
    cv2.ellipse(image, (120, 80), (50, 30), 0, 0, 360, 255, -1)  # crosses tile borders
    cv2.circle(image, (20, 20), 8, 255, -1)  # inside the first tile only
    return image


def test_nmm_merges_the_parts_of_an_object_cut_by_tile_borders():
    image = _two_objects_image()
    whole = BlobDetector()(image)["instances"]
    tiled = TiledPredictor(BlobDetector(), tile=96, overlap=0.25, merge="nmm")(image)
    instances = tiled["instances"]
    assert len(instances["masks"]) == 2
    for mask in whole["masks"]:
        ious = [(mask & m).sum() / (mask | m).sum() for m in instances["masks"]]
        assert max(ious) == 1.0
    big = int(torch.argmax(instances["masks"].flatten(1).sum(1)))
    torch.testing.assert_close(instances["boxes"][big], torch.tensor([70.0, 50.0, 171.0, 111.0]))


def test_nms_keeps_one_part_and_full_pass_restores_the_whole_object():
    image = _two_objects_image()
    nms = TiledPredictor(BlobDetector(), tile=96, overlap=0.25, merge="nms")(image)["instances"]
    areas = sorted(nms["masks"].flatten(1).sum(1).tolist())
    whole_area = int((image[:, :, 0] > 0).sum())
    # The ellipse's parts that do not overlap much survive NMS: more than 2 detections.
    assert len(areas) > 2 and sum(areas) < 2 * whole_area
    full = TiledPredictor(BlobDetector(), tile=96, overlap=0.25, merge="nmm",
                          full_pass=True)(image)["instances"]
    assert len(full["masks"]) == 2
    assert int(full["masks"].any(0).sum()) == whole_area


def test_needs_tiling_only_beyond_twice_the_test_size():
    assert not needs_tiling(1600, 1600, 800, 1333)
    assert needs_tiling(1700, 1700, 800, 1333)
    assert needs_tiling(256, 2800, 800, 1333)  # a long strip
    assert not needs_tiling(5000, 5000, 0, 1333)  # the model does not resize


def _filled_by_pycocotools(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_util

    return mask_util.decode(mask_util.merge(
        mask_util.frPyObjects(polygons, height, width))).astype(bool)


def _outer(mask: np.ndarray) -> np.ndarray:
    """The full-size mask with its holes filled (what its outer polygons cover)."""
    outside = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    return (outside != 2)[1:-1, 1:-1]


def test_tiled_masks_are_written_exactly_as_the_full_size_masks(tmp_path):
    """Tiled instances keep their masks as crops; predictions.json (RLE and polygons), the
    Labelme file, the overlay and the panoptic fusion are those of the pasted R×H×W masks,
    for objects cut by tile borders, with holes, 1 px thin, on the image edge."""
    import base64
    import io
    import json

    from PIL import Image
    from pycocotools import mask as mask_util

    from d2seg.engine.prediction_sources import PredictionInput
    from d2seg.engine.prediction_writers import CocoResultsWriter, LabelmeWriter, OverlayWriter
    from d2seg.modeling.postprocess import combine_semantic_and_instance_outputs

    image = np.zeros((300, 420, 1), np.uint8)
    cv2.ellipse(image, (200, 140), (120, 50), 20, 0, 360, 255, -1)  # crosses tile borders
    cv2.circle(image, (60, 230), 30, 255, -1)
    cv2.circle(image, (60, 230), 12, 0, -1)  # a ring: a hole
    image[20, 10:90] = 255  # 1 px thin
    image[250:, 380:] = 255  # on the bottom-right image edge
    cv2.rectangle(image, (0, 0), (5, 120), 255, -1)  # on the left edge, cut by tiles
    tiled = TiledPredictor(BlobDetector(), tile=96, overlap=0.25)(image)
    full = tiled["instances"]["masks"].to_tensor()
    dense = {"instances": {**tiled["instances"], "masks": full}}
    assert len(full) >= 5
    rgb = np.repeat(image, 3, axis=2)
    cv2.imwrite(str(tmp_path / "big.png"), rgb)
    item = PredictionInput(tmp_path / "big.png", "big", "image", image_id=1)
    for name, outputs in (("cropped", tiled), ("dense", dense)):
        folder = tmp_path / name
        for writer in (CocoResultsWriter(folder, ["blob"], [1], polygons=True),
                       LabelmeWriter(folder, ["blob"], [], embed=False),
                       OverlayWriter(folder, {"thing_classes": ["blob"]})):
            writer.write(item, rgb, outputs)
            writer.close()
    for path in ("predictions.json", "labelme/big.json"):
        assert (tmp_path / "cropped" / path).read_text() == (tmp_path / "dense" / path).read_text()
    assert np.array_equal(cv2.imread(str(tmp_path / "cropped" / "overlays" / "big.png")),
                          cv2.imread(str(tmp_path / "dense" / "overlays" / "big.png")))
    # Against the full masks themselves: pycocotools' RLE, polygons that pycocotools fills to
    # the full mask (holes filled), and a Labelme polygon or mask shape (holes) from the mask.
    results = json.loads((tmp_path / "cropped" / "predictions.json").read_text())
    shapes = json.loads((tmp_path / "cropped" / "labelme" / "big.json").read_text())["shapes"]
    polygons = [s["points"] for s in shapes if s["shape_type"] == "polygon"]
    for result, mask in zip(results, full.numpy()):
        rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
        assert result["segmentation"]["counts"] == rle["counts"].decode("ascii")
        assert np.array_equal(_filled_by_pycocotools(result["polygons"], *mask.shape),
                              _outer(mask))
        ys, xs = np.nonzero(mask)
        for shape in shapes:
            if shape["shape_type"] == "mask" and shape["points"][0] == [xs.min(), ys.min()]:
                drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"]))))
                assert np.array_equal(drawn > 0, mask[ys.min():ys.max() + 1,
                                                      xs.min():xs.max() + 1])
                break
        else:
            assert all(np.reshape(p, (-1, 2)).tolist() in polygons for p in result["polygons"])
    semantic = torch.zeros(300, 420, dtype=torch.long)
    semantic[:, 300:] = 1  # a stuff class on the right
    fused = [combine_semantic_and_instance_outputs(
        outputs["instances"], semantic, overlap_threshold=0.5, stuff_area_thresh=10,
        instances_score_thresh=0.0) for outputs in (tiled, dense)]
    assert torch.equal(fused[0][0], fused[1][0]) and fused[0][1] == fused[1][1]
