"""Visualizer: what it paints, where, in which colours, and what it writes to disk."""

import textwrap

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.coco import BoxMode
from d2seg.errors import D2SegError
from d2seg.utils.colormap import luminance, text_color
from d2seg.utils.visualizer import ColorMode, Visualizer, instance_label

H, W = 120, 160
GRAY = 128


def gray_image() -> np.ndarray:
    return np.full((H, W, 3), GRAY, dtype=np.uint8)


def random_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def two_masks() -> np.ndarray:
    """A rectangle and a disc, 2×H×W bool."""
    masks = np.zeros((2, H, W), dtype=bool)
    masks[0, 40:100, 20:80] = True
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (120, 60), 22, 1, -1)
    masks[1] = disc.astype(bool)
    return masks


def predictions(masks: np.ndarray, classes: list[int], scores: list[float] | None = None) -> dict:
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32), "classes": torch.tensor(classes),
           "masks": torch.from_numpy(masks)}
    if scores is not None:
        out["scores"] = torch.tensor(scores)
    return out


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


# -- instances ---------------------------------------------------------------------------


def test_masks_change_exactly_their_pixels_without_boxes_and_labels():
    image, masks = gray_image(), two_masks()
    vis = Visualizer(image, {"thing_classes": ["balloon", "kite"]})
    out = vis.draw_instance_predictions(predictions(masks, [0, 1], [0.9, 0.8]),
                                        draw_boxes=False, draw_labels=False).get_image()
    diff = changed(image, out)
    union = masks.any(axis=0)
    assert diff[union].all()
    assert not diff[~dilate(union, vis.output.outline_width + 1)].any()


def test_boxes_are_drawn_without_masks_or_scores():
    image, masks = gray_image(), two_masks()
    preds = predictions(masks, [0, 1])
    del preds["masks"]
    preds = {k: v.numpy() for k, v in preds.items()}  # numpy, like a Faster R-CNN dump
    out = Visualizer(image).draw_instance_predictions(preds, draw_labels=False).get_image()
    diff = changed(image, out)
    x0, y0, x1, y1 = preds["boxes"][0].astype(int)
    assert diff[y0, x0:x1].all() and diff[y0:y1, x0].all()  # the box's top and left sides
    assert not diff[y0 + 5:y1 - 5, x0 + 5:x1 - 5].any()  # nothing inside it


def test_label_text_formats_class_and_score():
    assert instance_label("balloon", 0.97) == "balloon 97%"
    assert instance_label("balloon", 0.974) == "balloon 97%"
    assert instance_label("balloon") == "balloon"


def test_label_is_drawn_above_the_box_with_the_class_name_in_contrasting_text():
    image = gray_image()
    masks = np.zeros((1, H, W), dtype=bool)
    masks[0, 60:80, 40:60] = True
    preds = predictions(masks, [0], [0.97])

    def label_region(names: list[str], draw_labels: bool = True) -> np.ndarray:
        out = Visualizer(image, {"thing_classes": names}).draw_instance_predictions(
            preds, draw_labels=draw_labels).get_image()
        return out[48:58, 40:70]  # rows above the box (top y 60) and its outline

    plain = label_region(["balloon"], draw_labels=False)
    balloon = label_region(["balloon"])
    assert (plain == GRAY).all()
    assert changed(plain, balloon).mean() > 0.9
    assert changed(balloon, label_region(["kite"])).any()  # the class name is what is drawn
    lum = balloon @ np.array([0.299, 0.587, 0.114])
    assert lum.max() - lum.min() > 100  # text against its background box
    assert text_color((250, 220, 40)) == (0, 0, 0) and text_color((20, 20, 90)) == (255, 255, 255)


def test_label_of_an_object_at_the_top_edge_stays_inside_the_canvas():
    image = gray_image()
    masks = np.zeros((1, H, W), dtype=bool)
    masks[0, 0:8, 150:160] = True  # top-right corner: no room above, none to the right
    out = Visualizer(image).draw_instance_predictions(predictions(masks, [3], [0.5]),
                                                      draw_boxes=False).get_image()
    below = changed(image, out)[8:20]
    assert below[:, 100:150].any()  # the label went below the object and left of it


def test_missing_class_names_are_drawn_as_class_numbers():
    masks = two_masks()
    vis = Visualizer(gray_image(), {"thing_classes": ["balloon"]})
    vis.draw_instance_predictions(predictions(masks, [0, 7], [0.9, 0.8]))  # no crash
    assert vis.legend_entries(np.full((H, W), 3))[0][0] == "class 3"


def test_image_bw_turns_pixels_outside_the_masks_gray():
    image, masks = random_image(), two_masks()
    out = Visualizer(image, instance_mode=ColorMode.IMAGE_BW).draw_instance_predictions(
        predictions(masks, [0, 1]), draw_boxes=False, draw_labels=False).get_image()
    outside = ~dilate(masks.any(axis=0), 3)
    assert (out[outside, 0] == out[outside, 1]).all() and (out[outside, 1] == out[outside, 2]).all()
    inside = erode(masks[0], 2)
    assert (out[inside, 0] != out[inside, 1]).mean() > 0.5  # the object keeps its colours


def test_segmentation_mode_colours_are_per_class_and_stable_image_mode_jitters():
    image = gray_image()
    masks = np.zeros((3, H, W), dtype=bool)
    masks[0, 10:40, 10:40] = masks[1, 10:40, 60:90] = masks[2, 70:100, 10:40] = True
    preds = predictions(masks, [0, 0, 1])

    def centre_colours(mode: ColorMode) -> list[tuple]:
        out = Visualizer(image, instance_mode=mode).draw_instance_predictions(
            preds, draw_boxes=False, draw_labels=False).get_image()
        return [tuple(out[25, 25]), tuple(out[25, 75]), tuple(out[85, 25])]

    same_class_a, same_class_b, other_class = centre_colours(ColorMode.SEGMENTATION)
    assert same_class_a == same_class_b != other_class
    assert centre_colours(ColorMode.SEGMENTATION) == [same_class_a, same_class_b, other_class]
    jittered = centre_colours(ColorMode.IMAGE)
    assert jittered[0] != jittered[1]
    assert jittered == centre_colours(ColorMode.IMAGE)


def test_small_objects_are_drawn_over_large_ones():
    image = gray_image()
    masks = np.zeros((2, H, W), dtype=bool)
    masks[0, 50:60, 50:60] = True  # small, listed first
    masks[1, 20:100, 20:120] = True
    vis = Visualizer(image, {"thing_colors": [(255, 0, 0), (0, 0, 255)]},
                     instance_mode=ColorMode.SEGMENTATION)
    out = vis.draw_instance_predictions(predictions(masks, [0, 1]), draw_boxes=False,
                                        draw_labels=False).get_image()
    red, blue = out[55, 55], out[30, 100]
    assert red[0] > red[2] and blue[2] > blue[0]


# -- semantic ----------------------------------------------------------------------------


SEM_H, SEM_W = 360, 480  # big enough that the legend (in a corner) misses the middle band


def twelve_class_map() -> np.ndarray:
    """SEM_H×SEM_W labels 0..11 in vertical bands (0 in the middle), except 5; an ignore (255)
    band at the bottom."""
    labels = ((np.arange(SEM_W)[None, :] * 12 // SEM_W + 6) % 12).repeat(SEM_H, axis=0)
    labels[labels == 5] = 4
    labels[-10:] = 255
    return labels.astype(np.uint8)


STUFF = ["background", *[f"class_{i}" for i in range(1, 12)]]


def test_legend_lists_exactly_the_classes_present_and_drawn():
    labels = twelve_class_map()
    vis = Visualizer(np.zeros(labels.shape, np.uint8), {"stuff_classes": STUFF})
    names = [name for name, _ in vis.legend_entries(labels)]
    assert names == [f"class_{i}" for i in range(1, 12) if i != 5]
    logits = torch.nn.functional.one_hot(torch.from_numpy(labels).long().clamp(max=11), 12)
    assert [n for n, _ in vis.legend_entries(logits.permute(2, 0, 1).float())] == names
    band = int((labels == 3).sum())
    assert "class_3" not in [n for n, _ in vis.legend_entries(labels, area_threshold=band + 1)]


def test_twelve_class_map_paints_every_class_but_background_and_ignore():
    labels = twelve_class_map()
    image = np.full((*labels.shape, 3), GRAY, dtype=np.uint8)
    vis = Visualizer(image, {"stuff_classes": STUFF})
    diff = changed(image, vis.draw_sem_seg(labels).get_image())
    middle = np.zeros(labels.shape, dtype=bool)
    middle[:, 100:380] = True  # the legend sits in a corner, outside these columns
    assert diff[middle & (labels != 0) & (labels != 255)].all()
    assert not diff[erode(labels == 0, 2)].any()
    assert not diff[middle & erode(labels == 255, 2)].any()


@pytest.mark.parametrize("names, expected", [
    (["background", "balloon"], "balloon"),
    (["car"], "car"),
    (None, "foreground"),
])
def test_binary_logits_draw_the_foreground(names, expected):
    image = gray_image()
    foreground = np.zeros((H, W), dtype=bool)
    foreground[30:90, 40:100] = True
    logits = torch.from_numpy(np.where(foreground, 2.0, -2.0)[None].astype(np.float32))
    vis = Visualizer(image, {"stuff_classes": names} if names else None)
    assert [n for n, _ in vis.legend_entries(logits)] == [expected]
    diff = changed(image, vis.draw_sem_seg(logits).get_image())
    assert diff[foreground].all()
    assert diff[~dilate(foreground, 2)].mean() < 0.15  # only the legend, in a corner


# -- panoptic and ground truth -----------------------------------------------------------


def test_panoptic_draws_things_and_stuff_but_not_background():
    image = gray_image()
    ids = np.full((H, W), 3, dtype=np.int32)  # segment 3: background (semantic label 1)
    ids[0:30] = 2  # stuff "sky"
    ids[60:100, 20:60] = 1  # a thing
    ids[110:] = 0  # void
    segments = [
        {"id": 1, "isthing": True, "category_id": 0, "score": 0.9},
        {"id": 2, "isthing": False, "category_id": 2},
        {"id": 3, "isthing": False, "category_id": 1},
    ]
    vis = Visualizer(image, {"thing_classes": ["balloon"], "stuff_classes": ["sky"]})
    out = vis.draw_panoptic_seg(torch.from_numpy(ids), segments).get_image()
    diff = changed(image, out)
    assert diff[60:100, 20:60].all() and diff[0:30, 60:100].all()
    assert not diff[32:42, 70:160].any()  # background, away from the thing's label


def test_dataset_dict_draws_polygons_rle_and_semantic_labels(tmp_path):
    image = gray_image()
    rle_mask = np.zeros((H, W), dtype=np.uint8, order="F")
    rle_mask[70:110, 100:150] = 1
    rle = mask_util.encode(rle_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[5:25, 5:60] = 2
    Image.fromarray(labels).save(tmp_path / "labels.png")
    dic = {
        "file_name": "img.jpg",
        "sem_seg_file_name": str(tmp_path / "labels.png"),
        "annotations": [
            {"bbox": [20, 40, 40, 30], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
             "segmentation": [[20, 40, 60, 40, 60, 70, 20, 70]], "iscrowd": 0},
            {"bbox": [100, 70, 150, 110], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1,
             "segmentation": rle, "iscrowd": 1},
        ],
    }
    vis = Visualizer(image, {"thing_classes": ["a", "b"], "stuff_classes": ["background", "a",
                                                                             "b"]})
    diff = changed(image, vis.draw_dataset_dict(dic).get_image())
    assert diff[45:65, 25:55].all() and diff[75:105, 105:145].all() and diff[8:22, 8:57].all()
    assert not diff[30:36, 70:95].any()


def test_dataset_dict_draws_a_panoptic_png(tmp_path):
    image = gray_image()
    ids = np.zeros((H, W), dtype=np.int64)
    ids[40:80, 40:80] = 300  # > 255: uses the G channel
    ids[0:20] = 5
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=2).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan.png")
    dic = {"pan_seg_file_name": str(tmp_path / "pan.png"), "segments_info": [
        {"id": 300, "isthing": True, "category_id": 0, "iscrowd": 0},
        {"id": 5, "isthing": False, "category_id": 0, "iscrowd": 0},
    ]}
    vis = Visualizer(image, {"thing_classes": ["car"], "stuff_classes": ["road"]})
    diff = changed(image, vis.draw_dataset_dict(dic).get_image())
    assert diff[42:78, 42:78].all() and diff[0:20, 40:100].all()


# -- images in, images out ---------------------------------------------------------------


@pytest.mark.parametrize("shape, expect_gray", [((H, W), True), ((H, W, 1), True),
                                                ((H, W, 2), True), ((H, W, 5), False)])
def test_gray_and_multiband_inputs_are_shown_as_rgb(shape, expect_gray):
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = Visualizer(pixels).output.get_image()
    assert out.shape == (H, W, 3)
    flat = pixels.reshape(H, W, -1)
    if expect_gray:
        assert (out == flat[:, :, :1]).all()
    else:
        assert (out == flat[:, :, :3]).all()


def test_scale_halves_the_output_and_save_writes_a_png_atomically(tmp_path):
    masks = two_masks()
    vis = Visualizer(random_image(), {"thing_classes": ["balloon", "kite"]}, scale=0.5)
    drawn = vis.draw_instance_predictions(predictions(masks, [0, 1], [0.9, 0.8]))
    assert drawn.get_image().shape == (H // 2, W // 2, 3)
    drawn.save(tmp_path / "vis.png")
    assert [p.name for p in tmp_path.iterdir()] == ["vis.png"]
    read = cv2.imread(str(tmp_path / "vis.png"))
    assert (read[:, :, ::-1] == drawn.get_image()).all()
    drawn.save(tmp_path / "vis.jpg")
    assert cv2.imread(str(tmp_path / "vis.jpg")).shape == (H // 2, W // 2, 3)
    with pytest.raises(D2SegError, match="fix: end the file name with .png or .jpg"):
        drawn.save(tmp_path / "vis.gif")


def test_text_colour_follows_luminance():
    assert luminance((255, 255, 255)) > luminance((0, 0, 255))
    assert text_color((255, 255, 0)) == (0, 0, 0)
    assert text_color((0, 0, 128)) == (255, 255, 255)


def test_no_detections_leave_the_image_as_it_is():
    image = random_image()
    empty = {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long),
             "scores": torch.zeros(0), "masks": torch.zeros(0, H, W, dtype=torch.bool)}
    vis = Visualizer(image, instance_mode=ColorMode.IMAGE_BW)
    vis.draw_instance_predictions(empty)
    vis.draw_panoptic_seg(np.zeros((H, W), np.int32), [])
    out = vis.draw_dataset_dict({"annotations": []}).get_image()
    assert (out == cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]).all()  # all gray


def test_docstring_example_runs(tmp_path):
    example = textwrap.dedent(Visualizer.__doc__.split("Example::")[1])
    exec(example.replace("/tmp/balloon.png", str(tmp_path / "balloon.png")), {})
    assert cv2.imread(str(tmp_path / "balloon.png")).shape == (120, 160, 3)
