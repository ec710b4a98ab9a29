"""Outer polygons of a bool mask that fill back to exactly its pixels.

pycocotools (so Detectron2, COCO evaluation and d2seg's loader) fills the pixels whose centres
lie inside a polygon. A contour traced through the boundary pixels' own coordinates
(``cv2.findContours`` on the mask) fills only the inner half of those pixels: the sample cars
lost 2.5 % of their area, a 5×3 blob 7 of its 15 pixels, and bboxes came out 1-2 px short. Here
the contour is traced on the mask upsampled twice and mapped back, which puts every vertex a
quarter pixel inside the mask's outer pixel edges: pycocotools and Labelme's rasteriser (PIL)
both fill the polygons back to exactly the mask, 1 px lines and single pixels included
(tests/utils/test_polygons.py). The price is about twice the vertices of the plain contour.

Example::

    polygons, has_hole = outer_polygons(mask)  # flat [x0, y0, x1, y1, ...] pixel polygons
"""

import cv2
import numpy as np


def outer_polygons(mask: np.ndarray, y0: int = 0, x0: int = 0
                   ) -> tuple[list[list[float]], bool]:
    """The outer contours of a bool H×W ``mask`` as flat ``[x, y, ...]`` polygons (pixels,
    COCO's convention: pixel (i, j) covers [j, j+1) × [i, i+1)), one per 8-connected part, and
    whether the mask has a hole (which the polygons fill). ``mask`` may be a crop whose top-left
    pixel is (``y0``, ``x0``) of the image: the polygons are then in image pixels. An empty
    mask gives ``([], False)``."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return [], False
    top, left = int(rows[0]), int(cols[0])
    crop = np.ascontiguousarray(mask[top : rows[-1] + 1, left : cols[-1] + 1], dtype=np.uint8)
    doubled = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    parents = hierarchy[0][:, 3]
    # doubled pixel (u, v) has its centre at ((u + 0.5) / 2, (v + 0.5) / 2) in the crop
    origin = np.array([x0 + left, y0 + top], dtype=float)
    polygons = [((c.reshape(-1, 2) + 0.5) / 2 + origin).reshape(-1).tolist()
                for c, parent in zip(contours, parents) if parent < 0]
    return polygons, bool((parents >= 0).any())
