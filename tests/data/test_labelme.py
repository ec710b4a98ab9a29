"""The Labelme reader: every file version, rasterisation equal to labelme's, clear errors."""

import base64
import copy
import io
import json
import math
import tempfile
from pathlib import Path

import labelme
import labelme.utils
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from d2seg.data.convert.from_labelme import LabelmeSource
from d2seg.data.convert.record import ConversionReport
from d2seg.data.labelme import (
    load_image,
    parse_labelme,
    rasterize_shape,
    read_labelme,
    read_labels_file,
    resolve_image_path,
    shape_polygon,
)
from d2seg.errors import AnnotationError, ConfigError


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _valid_file() -> dict:
    """A Labelme 5.x file with one shape of every type and an embedded 40×32 image."""
    crop = np.zeros((6, 5), dtype=np.uint8)
    crop[1:5, 1:4] = 255
    return {
        "version": "5.5.0",
        "flags": {},
        "shapes": [
            {"label": "a", "points": [[2, 3], [20, 4], [10, 18]], "group_id": None,
             "shape_type": "polygon", "flags": {}, "description": ""},
            {"label": "b", "points": [[30, 20], [25, 10]], "group_id": 1,
             "shape_type": "rectangle", "flags": {}},
            {"label": "b", "points": [[8, 20], [8, 24]], "group_id": 1, "shape_type": "circle"},
            {"label": "c", "points": [[1, 1], [38, 30]], "shape_type": "line"},
            {"label": "c", "points": [[1, 30], [10, 25], [20, 30]], "shape_type": "linestrip"},
            {"label": "d", "points": [[35, 5]], "shape_type": "point"},
            {"label": "e", "points": [[20.4, 22.7], [24.4, 27.7]], "shape_type": "mask",
             "mask": _png_base64(crop)},
        ],
        "imagePath": "x.png",
        "imageData": _png_base64(np.full((32, 40, 3), 128, dtype=np.uint8)),
        "imageHeight": 32,
        "imageWidth": 40,
    }


@pytest.fixture(scope="module")
def primitives(shared_data):
    return shared_data / "labelme_examples" / "primitives" / "primitives.json"


def test_every_primitive_rasterises_like_labelme(primitives):
    ours = read_labelme(primitives)
    theirs = labelme.LabelFile(str(primitives)).shapes
    assert {s.shape_type for s in ours.shapes} == {
        "rectangle", "circle", "polygon", "line", "point", "linestrip", "mask"
    }
    height, width = ours.height, ours.width
    for shape in ours.shapes:
        mask = rasterize_shape(shape, height, width)
        reference = theirs[shape.index]
        if shape.shape_type == "mask":
            # labelme pastes the crop itself in shapes_to_label
            cls, _ = labelme.utils.shapes_to_label((height, width), [reference], {shape.label: 1})
            expected = cls == 1
        else:
            expected = labelme.utils.shape_to_mask(
                (height, width), reference["points"], reference["shape_type"]
            )
        assert mask.any(), shape.shape_type
        assert np.array_equal(mask, expected), shape.shape_type


def test_mask_shape_is_pasted_at_its_top_left_corner(primitives):
    shape = next(s for s in read_labelme(primitives).shapes if s.shape_type == "mask")
    mask = rasterize_shape(shape, 450, 560)
    ys, xs = np.nonzero(mask)
    x0, y0 = (int(v) for v in shape.points[0])  # 417.4, 305.0
    assert (xs.min(), ys.min()) >= (x0, y0)
    assert (xs.max(), ys.max()) < (x0 + shape.mask.shape[1], y0 + shape.mask.shape[0])
    assert np.array_equal(mask[y0 : y0 + 100, x0 : x0 + 100], shape.mask)


def test_rectangle_corner_order_does_not_matter():
    raw = _valid_file()
    flipped = copy.deepcopy(raw)
    flipped["shapes"][1]["points"] = [[25, 10], [30, 20]]
    a, b = (parse_labelme(r, "x.json").shapes[1] for r in (raw, flipped))
    assert np.array_equal(rasterize_shape(a, 32, 40), rasterize_shape(b, 32, 40))
    assert shape_polygon(a) == shape_polygon(b) == [25, 10, 30, 10, 30, 20, 25, 20]


def test_pre_3x_file_without_shape_type_group_id_or_size():
    raw = {
        "imagePath": "x.png",
        "imageData": _valid_file()["imageData"],
        "lineColor": [0, 255, 0, 128],
        "shapes": [{"label": "a", "points": [[2, 3], [20, 4], [10, 18]], "line_color": None}],
    }
    annotation = parse_labelme(raw, "old.json")
    (shape,) = annotation.shapes
    assert (shape.shape_type, shape.group_id) == ("polygon", None)
    assert (annotation.height, annotation.width) == (None, None)
    image = load_image(annotation, None)
    assert (image.height, image.width) == (32, 40)


def test_windows_image_path_falls_back_to_the_file_next_to_the_json(tmp_path):
    Image.new("RGB", (40, 32)).save(tmp_path / "img.jpg")
    raw = {**_valid_file(), "imageData": None, "imagePath": "C:\\Users\\ann\\img.jpg"}
    annotation = parse_labelme(raw, tmp_path / "img.json")
    path, by_name = resolve_image_path(annotation, tmp_path, allow_outside_root=False)
    assert (path, by_name) == (tmp_path / "img.jpg", True)


@pytest.mark.parametrize("relative", [True, False])
def test_image_path_outside_the_input_folder_is_refused(tmp_path, relative):
    root = tmp_path / "in"
    root.mkdir()
    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 32)).save(secret)
    image_path = "../secret.png" if relative else str(secret)
    raw = {**_valid_file(), "imageData": None, "imagePath": image_path}
    annotation = parse_labelme(raw, root / "a.json")
    with pytest.raises(AnnotationError, match="outside the input folder.*--allow-outside-root"):
        resolve_image_path(annotation, root, allow_outside_root=False)
    assert resolve_image_path(annotation, root, allow_outside_root=True) == (secret, False)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # white band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    raw = {**_valid_file(), "imageData": None, "imagePath": "r.jpg", "imageHeight": 40,
           "imageWidth": 20}
    annotation = parse_labelme(raw, tmp_path / "r.json")
    image = load_image(annotation, tmp_path / "r.jpg")
    assert (image.height, image.width) == (40, 20)
    assert image.pixels is not None and image.pixels[:10].mean() > 200  # band now on top


def test_declared_size_must_match_the_image():
    raw = {**_valid_file(), "imageHeight": 33}
    with pytest.raises(AnnotationError, match="imageHeight.*fix"):
        load_image(parse_labelme(raw, "x.json"), None)


def test_labels_file_convention(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("__ignore__\n_background_\npotted plant\ntv/monitor\n\n", encoding="utf-8")
    assert read_labels_file(path) == ["potted plant", "tv/monitor"]
    path.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="twice: a"):
        read_labels_file(path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("shapes"), "no 'shapes' key"),
        (lambda r: r["shapes"][0].update(points=[[1, 2]]), r"shapes\[0\]: a polygon needs at"),
        (lambda r: r["shapes"][3].update(points=[[math.nan, 2], [3, 4]]), r"shapes\[3\].*NaN"),
        (lambda r: r["shapes"][5].update(points=[[1, math.inf]]), r"shapes\[5\].*infinity"),
        (lambda r: r["shapes"][6].update(mask="%%%"), r"shapes\[6\].*(base64|image)"),
        (lambda r: r.update(imageData="not an image"), "imageData|image"),
    ],
)
def test_bad_files_name_the_shape_and_the_fix(mutate, message):
    raw = _valid_file()
    mutate(raw)
    with pytest.raises(AnnotationError, match=message) as e:
        load_image(parse_labelme(raw, "bad.json"), None)
    assert "bad.json" in str(e.value) and "fix:" in str(e.value)


def test_truncated_json_is_an_annotation_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_valid_file())[:200], encoding="utf-8")
    with pytest.raises(AnnotationError, match="t.json.*JSON"):
        read_labelme(path)


_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=5),
    st.lists(st.floats(), max_size=3), st.lists(st.lists(st.integers(), max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_SHAPE_KEYS = ["label", "points", "group_id", "shape_type", "mask"]
_TOP_KEYS = ["shapes", "imagePath", "imageData", "imageHeight", "imageWidth"]


@st.composite
def _mutated_files(draw):
    raw = _valid_file()
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(["top", "shape", "point"]))
        if target == "top":
            obj, key = raw, draw(st.sampled_from(_TOP_KEYS))
        else:
            if not isinstance(raw.get("shapes"), list) or not raw["shapes"]:
                continue
            shape = draw(st.sampled_from(raw["shapes"]))
            if not isinstance(shape, dict):
                continue
            if target == "point" and isinstance(shape.get("points"), list) and shape["points"]:
                points = shape["points"]
                action = draw(st.sampled_from(["drop", "junk", "nan", "far"]))
                if action == "drop":
                    points.pop()
                elif action == "junk":
                    points[0] = draw(_JUNK)
                else:
                    points[0] = [math.nan if action == "nan" else 1e300, 1.0]
                continue
            obj, key = shape, draw(st.sampled_from(_SHAPE_KEYS))
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(st.one_of(_JUNK, st.just("!!notbase64")))
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_files())
def test_mutated_files_fail_only_with_annotation_error(raw):
    with tempfile.TemporaryDirectory() as folder:
        Image.new("RGB", (40, 32)).save(Path(folder) / "x.png")
        (Path(folder) / "m.json").write_text(json.dumps(raw), encoding="utf-8")
        try:
            record = LabelmeSource(folder).load("m.json", ConversionReport())
        except AnnotationError as e:
            assert "m.json" in str(e)
        else:
            assert record is not None and all(i.mask.shape == (32, 40) for i in record.instances)
