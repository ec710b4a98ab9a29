"""Tiled inference on shared feature maps (``--tile-mode features``): the window/block layout,
agreement with tiling by pixels where a window is the whole image, and block-wise backbone
passes on a large image.

The model is the tiny Mask R-CNN with random weights and no score threshold, so every window
has detections to compare.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.engine.feature_tiling import block_layout
from d2seg.engine.predictor import DefaultPredictor
from d2seg.engine.tiling import TiledPredictor
from d2seg.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml"


@pytest.fixture(scope="module")
def predictor() -> DefaultPredictor:
    """The tiny Mask R-CNN (random init, seed 0) at a 128 px test size, keeping every score."""
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", "1", "INPUT.MIN_SIZE_TEST", "128",
                         "INPUT.MAX_SIZE_TEST", "128", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    return DefaultPredictor(cfg)


def test_windows_are_aligned_and_blocks_bounded():
    layout = block_layout(700, 1000, tile=200, overlap=0.25, align=64, block=600)
    windows = [w for _, ws in layout for w in ws]
    covered = np.zeros((704, 1024), int)  # the image padded to multiples of 64
    for (by0, bx0, by1, bx1), block_windows in layout:
        assert by1 - by0 <= 600 and bx1 - bx0 <= 600
        for y0, x0, y1, x1 in block_windows:
            assert (y1 - y0, x1 - x0) == (256, 256)  # 200 rounded up to the 64 px grid
            assert y0 % 64 == 0 and x0 % 64 == 0
            assert by0 <= y0 and y1 <= by1 and bx0 <= x0 and x1 <= bx1
            covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    assert len(set(windows)) == len(windows) and len(layout) > 1
    # Blocks only group the windows: one unbounded block has the same ones.
    (whole, same), = block_layout(700, 1000, tile=200, overlap=0.25, align=64, block=10**6)
    assert whole == (0, 0, 704, 1024) and sorted(same) == sorted(windows)


@pytest.mark.parametrize("tile", [128, 256])  # the tile at the test size, and resized 2×
def test_features_mode_equals_images_mode_when_the_image_is_one_tile(predictor, tile):
    image = render_sample("balloons", seed=1, size=(tile, tile))["image"]
    features = TiledPredictor(predictor, tile=tile, mode="features")(image, "RGB")["instances"]
    images = TiledPredictor(predictor, tile=tile, mode="images")(image, "RGB")["instances"]
    assert len(images["boxes"]) >= 5
    torch.testing.assert_close(features["boxes"], images["boxes"])
    torch.testing.assert_close(features["scores"], images["scores"])
    assert torch.equal(features["masks"], images["masks"])


def test_large_image_goes_through_the_backbone_block_by_block(predictor):
    image = np.ascontiguousarray(np.tile(
        render_sample("balloons", seed=1, size=(128, 128))["image"], (3, 4, 1)))  # 384×512
    seen = []
    hook = predictor.model.backbone.register_forward_hook(
        lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    try:
        tiled = TiledPredictor(predictor, tile=128, overlap=0.25, mode="features", block=256)
        instances = tiled(image, "RGB")["instances"]
    finally:
        hook.remove()
    assert len(seen) > 1 and max(max(shape) for shape in seen) <= 256
    # Every block found objects: detections lie in every quarter of the image.
    centres = (instances["boxes"][:, :2] + instances["boxes"][:, 2:]) / 2
    for ys in ((0, 192), (192, 384)):
        for xs in ((0, 256), (256, 512)):
            inside = ((centres[:, 1] >= ys[0]) & (centres[:, 1] < ys[1])
                      & (centres[:, 0] >= xs[0]) & (centres[:, 0] < xs[1]))
            assert inside.any()
    assert instances["masks"].shape[1:] == (384, 512)


def test_features_mode_is_refused_for_a_model_without_detection_heads():
    class SemanticOnly:
        model = torch.nn.Identity()

    assert TiledPredictor(SemanticOnly(), tile=64).mode == "images"
    with pytest.raises(ConfigError, match="--tile-mode images"):
        TiledPredictor(SemanticOnly(), tile=64, mode="features")
    with pytest.raises(ConfigError, match="--tile-mode"):
        TiledPredictor(SemanticOnly(), tile=64, mode="pixels")
