"""outer_polygons: pycocotools and Labelme's rasteriser fill the polygons back to the mask."""

import cv2
import numpy as np
from pycocotools import mask as mask_util

from d2seg.data.labelme import LabelmeShape, rasterize_shape
from d2seg.utils.polygons import outer_polygons


def _components(rng: np.random.Generator, count: int):
    """Bool masks of one 8-connected component each: noise (diagonal touches, specks), 1 px
    lines, smooth blobs and single pixels, in 8-40 px images."""
    for i in range(count):
        height, width = (int(v) for v in rng.integers(8, 40, 2))
        canvas = np.zeros((height, width), np.uint8)
        if i % 4 == 0:
            canvas = (rng.random((height, width)) < 0.3).astype(np.uint8)
        elif i % 4 == 1:
            cv2.line(canvas, tuple(int(v) for v in rng.integers(0, width, 2)),
                     tuple(int(v) for v in rng.integers(0, height, 2)), 1, 1)
        elif i % 4 == 2:
            canvas = (cv2.GaussianBlur(rng.random((height, width)), (5, 5), 0) > 0.5).astype(
                np.uint8)
        else:
            canvas[rng.integers(0, height), rng.integers(0, width)] = 1
        count, labels = cv2.connectedComponents(canvas, connectivity=8)
        if count > 1:
            yield labels == 1


def _filled(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: everything not reachable from outside it."""
    outside = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    return (outside != 2)[1:-1, 1:-1]


def _pycocotools(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    return mask_util.decode(mask_util.merge(
        mask_util.frPyObjects(polygons, height, width))).astype(bool)


def _labelme(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    drawn = np.zeros((height, width), bool)
    for points in polygons:
        drawn |= rasterize_shape(LabelmeShape(0, "", "polygon", np.reshape(points, (-1, 2)),
                                              None), height, width)
    return drawn


def test_both_rasterisers_fill_the_polygons_back_to_the_mask_holes_filled():
    holes = 0
    for mask in _components(np.random.default_rng(1), 800):
        polygons, has_hole = outer_polygons(mask)
        expected = _filled(mask)
        assert has_hole == (not np.array_equal(expected, mask))
        holes += has_hole
        np.testing.assert_array_equal(_pycocotools(polygons, *mask.shape), expected)
        np.testing.assert_array_equal(_labelme(polygons, *mask.shape), expected)
    assert 0 < holes < 200


def test_a_crop_gives_polygons_in_image_pixels_and_one_per_part():
    image = np.zeros((50, 60), bool)
    image[10:20, 30:42] = True
    image[25:28, 5:9] = True
    crop, y0, x0 = image[8:30, 3:45], 8, 3
    polygons, has_hole = outer_polygons(crop, y0, x0)
    assert len(polygons) == 2 and not has_hole
    np.testing.assert_array_equal(_pycocotools(polygons, 50, 60), image)
    assert outer_polygons(np.zeros((4, 4), bool)) == ([], False)
