"""Augmentations: Detectron2's resize/crop/flip rules, applied alike to images and targets."""

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from d2seg.config import get_cfg
from d2seg.data.detection_utils import boxes_from_masks
from d2seg.data.transforms import (
    CategoryAreaCrop,
    ColorAugSSD,
    ColorJitterInFormat,
    RandomCrop,
    ResizeShortestEdge,
    build_transforms,
)
from d2seg.errors import ConfigError


def _sample(height: int = 64, width: int = 96) -> dict:
    """An image with a distinct colour per column, two rectangular instances and their boxes."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[0] = torch.arange(width, dtype=torch.uint8)[None, :]
    image[1] = torch.arange(height, dtype=torch.uint8)[:, None]
    masks = torch.zeros(2, height, width, dtype=torch.uint8)
    masks[0, 5:20, 4:30] = 1  # top left
    masks[1, 40:60, 70:90] = 1  # bottom right
    return {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(
            boxes_from_masks(masks), format="XYXY", canvas_size=(height, width)
        ),
        "masks": tv_tensors.Mask(masks),
        "sem_seg": tv_tensors.Mask(masks[0:1] + 2 * masks[1:2]),
    }


def _train_cfg(*overrides):
    """Defaults with resizing to the sample's own size and no flip, then ``KEY VALUE`` overrides."""
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.RANDOM_FLIP", "none", *overrides])
    return cfg


@pytest.mark.parametrize(
    "height, width, short_edge, max_size, expected",
    [
        (64, 96, 48, 1000, (48, 72)),  # shorter side → 48, aspect kept
        (96, 64, 48, 1000, (72, 48)),
        (64, 96, 48, 60, (40, 60)),  # longer side capped at max_size
        (64, 128, 32, 1333, (32, 64)),
    ],
)
def test_resize_shortest_edge_sizes_follow_detectron2(
    height, width, short_edge, max_size, expected
):
    resize = ResizeShortestEdge((short_edge,), max_size)
    out = resize(_sample(height, width))
    assert tuple(out["image"].shape[-2:]) == expected
    assert tuple(out["masks"].shape[-2:]) == expected
    assert tuple(out["sem_seg"].shape[-2:]) == expected
    assert tuple(out["boxes"].canvas_size) == expected


def test_choice_sampling_draws_only_the_listed_sizes_and_range_sampling_spans_them():
    torch.manual_seed(0)
    choice = ResizeShortestEdge((32, 48), 1000, "choice")
    sizes = {min(choice(_sample())["image"].shape[-2:]) for _ in range(30)}
    assert sizes == {32, 48}
    spread = ResizeShortestEdge((32, 40), 1000, "range")
    sizes = {min(spread(_sample())["image"].shape[-2:]) for _ in range(60)}
    assert sizes <= set(range(32, 41)) and len(sizes) >= 5


def test_resized_boxes_still_bound_resized_masks_and_masks_stay_binary():
    out = ResizeShortestEdge((40,), 1000)(_sample())
    assert set(out["masks"].unique().tolist()) == {0, 1}  # nearest: no blended values
    assert set(out["sem_seg"].unique().tolist()) == {0, 1, 2}
    tight = boxes_from_masks(out["masks"])
    # Scaled boxes and the tight boxes of the scaled masks agree to within one pixel.
    assert torch.allclose(out["boxes"].as_subclass(torch.Tensor), tight, atol=1.0)


def test_horizontal_flip_maps_boxes_x_to_width_minus_x():
    cfg = _train_cfg("INPUT.RANDOM_FLIP", "horizontal")
    transforms = build_transforms(cfg, is_train=True)
    sample = _sample()
    width = sample["image"].shape[-1]
    original = sample["boxes"].as_subclass(torch.Tensor)
    flipped_x = torch.stack([width - original[:, 2], width - original[:, 0]], dim=1)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = transforms(_sample())
        boxes = out["boxes"].as_subclass(torch.Tensor)
        was_flipped = torch.equal(out["image"], sample["image"].flip(-1))
        assert was_flipped or torch.equal(out["image"], sample["image"])
        assert torch.equal(boxes[:, [0, 2]], flipped_x if was_flipped else original[:, [0, 2]])
        assert torch.equal(boxes[:, [1, 3]], original[:, [1, 3]])
        assert torch.equal(boxes_from_masks(out["masks"]), boxes)
        seen.add(was_flipped)
    assert seen == {True, False}


def test_vertical_flip_flips_rows():
    cfg = _train_cfg("INPUT.RANDOM_FLIP", "vertical")
    outs = []
    for seed in range(8):
        torch.manual_seed(seed)
        outs.append(build_transforms(cfg, is_train=True)(_sample())["image"])
    assert any(torch.equal(o, _sample()["image"].flip(-2)) for o in outs)


def test_crop_clips_boxes_and_empties_those_outside():
    torch.manual_seed(0)
    crop = RandomCrop("absolute", (32, 32))
    for _ in range(10):
        out = crop(_sample())
        assert tuple(out["image"].shape[-2:]) == (32, 32)
        boxes = out["boxes"].as_subclass(torch.Tensor)
        assert (boxes >= 0).all() and (boxes <= 32).all()
        tight = boxes_from_masks(out["masks"])
        # A box whose instance left the crop has no area; the others still bound their masks.
        empty = out["masks"].flatten(1).sum(1) == 0
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        assert ((widths * heights)[empty] == 0).all()
        assert torch.equal(boxes[~empty], tight[~empty])


@pytest.mark.parametrize(
    "crop_type, size, check",
    [
        ("relative", (0.5, 0.25), lambda h, w: (h, w) == (32, 24)),
        ("relative_range", (0.5, 0.5), lambda h, w: 32 <= h <= 64 and 48 <= w <= 96),
        ("absolute", (40, 200), lambda h, w: (h, w) == (40, 96)),
        ("absolute_range", (20, 50), lambda h, w: 20 <= h <= 50 and 20 <= w <= 50),
    ],
)
def test_crop_sizes_of_the_four_detectron2_types(crop_type, size, check):
    torch.manual_seed(0)
    crop = RandomCrop(crop_type, size)
    for _ in range(10):
        height, width = crop(_sample())["image"].shape[-2:]
        assert check(height, width), (height, width)


@pytest.mark.parametrize(
    "crop_type, size", [("relative", (0.0, 0.5)), ("relative_range", (1.5, 0.5)),
                        ("absolute_range", (50, 20)), ("absolute", (32,))]
)
def test_invalid_crop_config_is_a_config_error_naming_the_key(crop_type, size):
    with pytest.raises(ConfigError, match="INPUT.CROP.SIZE"):
        RandomCrop(crop_type, size)


def test_crop_is_applied_before_resize():
    cfg = _train_cfg("INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "relative")
    cfg.INPUT.CROP.SIZE = [0.5, 0.5]
    transforms = build_transforms(cfg, is_train=True)
    assert isinstance(transforms.transforms[0], RandomCrop)
    # A 32×48 crop resized to a 64 shortest edge: 64×96 again.
    assert tuple(transforms(_sample())["image"].shape[-2:]) == (64, 96)


def test_same_seed_same_augmentation():
    cfg = _train_cfg(
        "INPUT.MIN_SIZE_TRAIN", (32, 40, 48), "INPUT.RANDOM_FLIP", "horizontal",
        "INPUT.COLOR_JITTER", 0.4, "INPUT.CROP.ENABLED", True, "INPUT.CROP.SIZE", [0.5, 0.5],
    )
    transforms = build_transforms(cfg, is_train=True)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append([transforms(_sample()) for _ in range(3)])
    for first, second in zip(*runs):
        assert all(torch.equal(first[k], second[k]) for k in first)


def test_test_transforms_resize_deterministically_and_zero_disables():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 32, 1000
    state = torch.get_rng_state()
    assert tuple(build_transforms(cfg, is_train=False)(_sample())["image"].shape[-2:]) == (32, 48)
    assert torch.equal(torch.get_rng_state(), state)  # inference draws no random numbers
    cfg.INPUT.MIN_SIZE_TEST = 0
    assert tuple(build_transforms(cfg, is_train=False)(_sample())["image"].shape[-2:]) == (64, 96)


def test_colour_jitter_of_bgr_equals_jitter_of_rgb_in_reverse_channel_order():
    rgb = _sample()["image"]
    bgr = tv_tensors.wrap(rgb.flip(0), like=rgb)
    torch.manual_seed(5)
    jittered_rgb = ColorJitterInFormat(0.5, "RGB")(rgb)
    torch.manual_seed(5)
    jittered_bgr = ColorJitterInFormat(0.5, "BGR")(bgr)
    assert not torch.equal(jittered_rgb, rgb)
    assert torch.equal(jittered_bgr.flip(0), jittered_rgb)


def test_colour_jitter_leaves_targets_alone():
    torch.manual_seed(0)
    out = v2.Compose([ColorJitterInFormat(0.5, "RGB")])(_sample())
    sample = _sample()
    assert torch.equal(out["masks"], sample["masks"]) and torch.equal(out["boxes"], sample["boxes"])


def test_colour_jitter_on_grayscale_is_a_config_error():
    cfg = _train_cfg("INPUT.COLOR_JITTER", 0.3, "INPUT.FORMAT", "L")
    with pytest.raises(ConfigError, match="INPUT.COLOR_JITTER"):
        build_transforms(cfg, is_train=True)


def test_range_sampling_needs_two_sizes():
    cfg = _train_cfg("INPUT.MIN_SIZE_TRAIN", (32, 40, 48), "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range")
    with pytest.raises(ConfigError, match="INPUT.MIN_SIZE_TRAIN"):
        build_transforms(cfg, is_train=True)


def _striped_sample() -> dict:
    """100 px wide: class 1 in the 30 left columns, class 0 elsewhere, an ignored band at
    columns 30-39; the image's red channel repeats the labels (to see both cropped alike)."""
    labels = torch.zeros(1, 64, 100, dtype=torch.uint8)
    labels[:, :, :30] = 1
    labels[:, :, 30:40] = 255
    image = torch.zeros(3, 64, 100, dtype=torch.uint8)
    image[0] = labels[0]
    return {"image": tv_tensors.Image(image), "sem_seg": tv_tensors.Mask(labels)}


def _satisfies(labels: torch.Tensor, max_area: float) -> bool:
    values, counts = labels.unique(return_counts=True)
    counts = counts[values != 255]
    return len(counts) > 1 and int(counts.max()) < max_area * float(counts.sum())


def test_category_area_crop_avoids_crops_of_one_class():
    """A 64×40 crop satisfies the rule at 15 of its 61 positions (25%); 10 draws find one
    94% of the time."""
    torch.manual_seed(0)
    plain = [RandomCrop("absolute", (64, 40))(_striped_sample()) for _ in range(40)]
    constrained = [CategoryAreaCrop("absolute", (64, 40), 0.75)(_striped_sample())
                   for _ in range(40)]
    for out in plain + constrained:
        assert out["sem_seg"].shape == (1, 64, 40)
        assert torch.equal(out["image"][0], out["sem_seg"][0])
    assert sum(_satisfies(o["sem_seg"], 0.75) for o in plain) <= 16
    assert sum(_satisfies(o["sem_seg"], 0.75) for o in constrained) >= 32


def test_category_area_crop_follows_the_resize_as_in_detectron2_semantic_training():
    cfg = _train_cfg("INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 1000,
                     "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute",
                     "INPUT.CROP.SIZE", [48, 64], "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", 0.75)
    torch.manual_seed(0)
    out = build_transforms(cfg, is_train=True)(_sample())
    # Resized to 128×192 first, then cropped: the crop size is the output size.
    assert tuple(out["image"].shape[-2:]) == (48, 64) == tuple(out["sem_seg"].shape[-2:])
    with pytest.raises(ConfigError, match="INPUT.CROP.SINGLE_CATEGORY_MAX_AREA"):
        CategoryAreaCrop("absolute", (48, 64), 0.0)


def _ssd(image_bgr: np.ndarray, **params) -> np.ndarray:
    params = {"brightness": None, "contrast": None, "saturation": None, "hue": None,
              "contrast_first": True, **params}
    image = tv_tensors.Image(torch.from_numpy(image_bgr).permute(2, 0, 1).contiguous())
    return ColorAugSSD("BGR").transform(image, params).permute(1, 2, 0).numpy()


def test_color_aug_ssd_steps_act_as_their_names_say():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    brighter = _ssd(image, brightness=20.0)
    np.testing.assert_array_equal(brighter, np.minimum(image.astype(int) + 20, 255))
    np.testing.assert_array_equal(_ssd(image, contrast=0.5), (image * 0.5).astype(np.uint8))
    gray = _ssd(image, saturation=0.0)
    assert np.abs(gray.astype(int) - gray.mean(2, keepdims=True)).max() <= 1
    red = np.zeros((2, 2, 3), dtype=np.uint8)
    red[..., 2] = 255  # BGR red, OpenCV hue 0
    cyan = _ssd(red, hue=90)  # hue 90 of 180: the opposite colour
    np.testing.assert_array_equal(cyan[0, 0], [255, 255, 0])
    assert cv2.cvtColor(red, cv2.COLOR_BGR2HSV)[0, 0, 0] == 0


def test_color_aug_ssd_of_rgb_is_the_bgr_augmentation_in_reverse_order_and_targets_stay():
    sample = _sample()
    rgb = sample["image"]
    torch.manual_seed(3)
    out = ColorAugSSD("RGB")(sample)
    torch.manual_seed(3)
    bgr = ColorAugSSD("BGR")(tv_tensors.wrap(rgb.flip(0), like=rgb))
    assert not torch.equal(out["image"], rgb)
    assert torch.equal(out["image"].flip(0), bgr)
    assert torch.equal(out["masks"], sample["masks"]) and torch.equal(out["sem_seg"],
                                                                      sample["sem_seg"])
    with pytest.raises(ConfigError, match="INPUT.COLOR_AUG_SSD"):
        build_transforms(_train_cfg("INPUT.COLOR_AUG_SSD", True, "INPUT.FORMAT", "L"), True)
