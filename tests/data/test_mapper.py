"""DatasetMapper: dataset dicts (polygons, RLE, label PNGs, panoptic PNGs) → model inputs."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from d2seg.config import get_cfg
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.coco import BoxMode
from d2seg.data.datasets import load_coco_json, register_coco_panoptic
from d2seg.data.io import read_image, read_panoptic_ids
from d2seg.data.mapper import DatasetMapper
from d2seg.errors import DatasetError

HEIGHT, WIDTH = 64, 96
POLYGON = [10.0, 8.0, 40.0, 8.0, 40.0, 30.0, 10.0, 30.0]  # a 30×22 rectangle


def _mapper(is_train=True, *overrides) -> DatasetMapper:
    """A mapper that keeps the 64×96 size and does not flip, unless ``KEY VALUE`` overrides say."""
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (HEIGHT,), "INPUT.MIN_SIZE_TEST", 0,
                         "INPUT.RANDOM_FLIP", "none", *overrides])
    return DatasetMapper(**DatasetMapper.from_config(cfg, is_train=is_train))


def _channels(image_format: str, channels: int) -> list:
    """Overrides for ``image_format`` with ``channels`` pixel means/stds."""
    return ["INPUT.FORMAT", image_format, "MODEL.PIXEL_MEAN", [0.0] * channels,
            "MODEL.PIXEL_STD", [1.0] * channels]


def _rle_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[40:60, 50:90] = 1
    mask[45:50, 60:70] = 0  # a hole: only a mask (not a polygon) can say this
    return mask


@pytest.fixture
def dataset_dict(tmp_path) -> dict:
    """An RGB image with a polygon instance, a compressed-RLE instance, an uncompressed-RLE
    crowd region and a label PNG."""
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[..., 0] = 200  # red
    image[..., 2] = 10
    Image.fromarray(image).save(tmp_path / "image.png")
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    labels[8:30, 10:40] = 1
    labels[40:60, 50:90] = 2
    labels[0, :] = 255
    Image.fromarray(labels).save(tmp_path / "labels.png")
    rle = mask_util.encode(np.asfortranarray(_rle_mask()))
    crowd = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    crowd[0:5, 0:5] = 1
    uncompressed = {"size": [HEIGHT, WIDTH], "counts": _uncompressed_counts(crowd)}
    return {
        "file_name": str(tmp_path / "image.png"),
        "height": HEIGHT,
        "width": WIDTH,
        "image_id": 7,
        "sem_seg_file_name": str(tmp_path / "labels.png"),
        "annotations": [
            {"bbox": [10.0, 8.0, 30.0, 22.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
             "segmentation": [POLYGON], "iscrowd": 0},
            {"bbox": [50.0, 40.0, 90.0, 60.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1,
             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
             "iscrowd": 0},
            {"bbox": [0.0, 0.0, 5.0, 5.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1,
             "segmentation": uncompressed, "iscrowd": 1},
        ],
    }


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths of 0/1 in column-major order, starting with 0s."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def test_polygon_and_rle_annotations_become_instances_and_crowd_is_dropped(dataset_dict):
    out = _mapper()(dataset_dict)
    instances = out["instances"]
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, HEIGHT, WIDTH)
    assert instances["classes"].tolist() == [0, 1]  # the crowd region is not a target
    assert instances["boxes"].dtype == torch.float32
    assert instances["boxes"].tolist() == [[10, 8, 40, 30], [50, 40, 90, 60]]
    assert instances["masks"].dtype == torch.uint8
    assert instances["masks"].shape == (2, HEIGHT, WIDTH)
    polygon = mask_util.decode(mask_util.frPyObjects([POLYGON], HEIGHT, WIDTH))[..., 0]
    assert np.array_equal(instances["masks"][0].numpy(), polygon)
    assert np.array_equal(instances["masks"][1].numpy(), _rle_mask())
    assert out["sem_seg"].dtype == torch.int64
    labels = np.asarray(Image.open(dataset_dict["sem_seg_file_name"]))
    assert np.array_equal(out["sem_seg"].numpy(), labels)
    assert (out["height"], out["width"], out["image_id"]) == (HEIGHT, WIDTH, 7)


def test_uncompressed_rle_instances_are_decoded(dataset_dict):
    dataset_dict["annotations"][2]["iscrowd"] = 0
    masks = _mapper()(dataset_dict)["instances"]["masks"]
    assert masks.shape[0] == 3 and masks[2, :5, :5].all() and masks[2].sum() == 25


def test_resize_scales_targets_but_keeps_the_original_height_and_width(dataset_dict):
    out = _mapper(True, "INPUT.MIN_SIZE_TRAIN", (32,))(dataset_dict)
    assert out["image"].shape == (3, 32, 48)
    assert out["instances"]["masks"].shape == (2, 32, 48)
    assert out["sem_seg"].shape == (32, 48)
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 255}  # nearest: no new labels
    assert out["instances"]["boxes"].tolist() == [[5, 4, 20, 15], [25, 20, 45, 30]]
    assert (out["height"], out["width"]) == (HEIGHT, WIDTH)


def test_mapper_never_modifies_the_dataset_dict(dataset_dict):
    before = copy.deepcopy(dataset_dict)
    out = _mapper()(dataset_dict)
    assert dataset_dict == before
    assert "annotations" not in out
    out["segments"] = []
    assert "segments" not in dataset_dict


def test_semantic_only_dict_gets_sem_seg_and_its_size(dataset_dict):
    semantic = {k: dataset_dict[k] for k in ("file_name", "sem_seg_file_name")}
    out = _mapper()(semantic)
    assert out["sem_seg"].shape == (HEIGHT, WIDTH) and "instances" not in out
    assert (out["height"], out["width"]) == (HEIGHT, WIDTH)


def test_palette_label_png_gives_class_indices_not_colours(dataset_dict, tmp_path):
    labels = Image.open(dataset_dict["sem_seg_file_name"]).convert("P")
    labels.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10] + [255, 255, 255] * 253)
    labels.save(tmp_path / "palette.png")
    dataset_dict["sem_seg_file_name"] = str(tmp_path / "palette.png")
    assert set(_mapper()(dataset_dict)["sem_seg"].unique().tolist()) == {0, 1, 2, 255}


def test_test_mode_gives_only_the_image(dataset_dict):
    out = _mapper(False)(dataset_dict)
    assert out["image"].shape == (3, HEIGHT, WIDTH)
    assert not {"instances", "sem_seg", "annotations"} & out.keys()


def test_rgb_and_bgr_channel_order(dataset_dict):
    rgb = _mapper(True, "INPUT.FORMAT", "RGB")(dataset_dict)["image"]
    bgr = _mapper(True, "INPUT.FORMAT", "BGR")(dataset_dict)["image"]
    assert rgb[:, 0, 0].tolist() == [200, 0, 10]
    assert bgr[:, 0, 0].tolist() == [10, 0, 200]


def test_grayscale_format_gives_one_channel(dataset_dict):
    mapper = _mapper(True, *_channels("L", 1))
    image = mapper(dataset_dict)["image"]
    expected = np.asarray(Image.open(dataset_dict["file_name"]).convert("L"))
    assert image.shape == (1, HEIGHT, WIDTH)
    assert np.array_equal(image[0].numpy(), expected)


def test_n_channel_npy_images(tmp_path, dataset_dict):
    stack = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 5), dtype=np.uint8)
    np.save(tmp_path / "stack.npy", stack)
    dataset_dict["file_name"] = str(tmp_path / "stack.npy")
    mapper = _mapper(True, *_channels("N", 5))
    assert np.array_equal(mapper(dataset_dict)["image"].permute(1, 2, 0).numpy(), stack)
    four = _mapper(True, *_channels("N", 4))
    with pytest.raises(DatasetError, match="5 channel"):
        four(dataset_dict)


def test_exif_rotated_jpeg_gives_the_rotated_size(tmp_path):
    image = Image.new("RGB", (WIDTH, HEIGHT), (0, 128, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg", "RGB").shape == (WIDTH, HEIGHT, 3)
    out = _mapper(False)({"file_name": str(tmp_path / "rotated.jpg"), "image_id": 1})
    assert out["image"].shape == (3, WIDTH, HEIGHT)
    assert (out["height"], out["width"]) == (WIDTH, HEIGHT)
    stale = {"file_name": str(tmp_path / "rotated.jpg"), "height": HEIGHT, "width": WIDTH}
    with pytest.raises(DatasetError, match="EXIF"):
        _mapper(False)(stale)


def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path):
    wide = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png", "L")[0, :, 0].tolist() == [0, 100, 255]


def test_missing_image_is_a_dataset_error_naming_the_file(dataset_dict, tmp_path):
    dataset_dict["file_name"] = str(tmp_path / "gone.jpg")
    with pytest.raises(DatasetError, match="gone.jpg.*fix"):
        _mapper()(dataset_dict)


def test_unreadable_image_is_a_dataset_error_naming_the_file(dataset_dict, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    dataset_dict["file_name"] = str(tmp_path / "broken.jpg")
    with pytest.raises(DatasetError, match="broken.jpg.*fix"):
        _mapper()(dataset_dict)


def test_label_png_of_another_size_is_a_dataset_error(dataset_dict, tmp_path):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    dataset_dict["sem_seg_file_name"] = str(tmp_path / "small.png")
    with pytest.raises(DatasetError, match="small.png"):
        _mapper()(dataset_dict)


def test_crop_removes_instances_that_leave_it_and_boxes_bound_the_masks(dataset_dict):
    mapper = _mapper(True, "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute",
                     "INPUT.CROP.SIZE", [32, 32], "INPUT.MIN_SIZE_TRAIN", (32,))
    counts = set()
    torch.manual_seed(0)
    for _ in range(20):
        instances = mapper(dataset_dict)["instances"]
        counts.add(len(instances["classes"]))
        masks, boxes = instances["masks"], instances["boxes"]
        assert masks.shape[1:] == (32, 32)
        for mask, box in zip(masks, boxes):
            ys, xs = np.nonzero(mask.numpy())
            assert len(xs) > 0  # no instance without pixels survives
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert 0 in counts and max(counts) >= 1  # some crops lose every instance, some keep one


def test_coco_json_of_real_labelme_data_against_pycocotools(shared_data):
    """The COCO file labelme's own converter wrote: masks equal pycocotools' annToMask."""
    root = shared_data / "labelme_examples/instance_segmentation/data_dataset_coco"
    dataset_dicts = load_coco_json(root / "annotations.json", root)
    coco = COCO(str(root / "annotations.json"))
    mapper = _mapper(True, "INPUT.MIN_SIZE_TRAIN", (0,))
    for dataset_dict in dataset_dicts:
        out = mapper(dataset_dict)
        anns = [a for a in coco.imgToAnns[dataset_dict["image_id"]] if not a.get("iscrowd", 0)]
        expected = np.stack([coco.annToMask(a) for a in anns])
        assert np.array_equal(out["instances"]["masks"].numpy(), expected)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        assert np.allclose(out["instances"]["boxes"].numpy(), xyxy)


@pytest.fixture
def panoptic_sample(shared_data):
    """panopticapi's 2 COCO panoptic images registered with register_coco_panoptic (80 thing,
    53 stuff categories); yields (dataset name, sample folder)."""
    root = shared_data / "coco_panoptic_sample/sample_data"
    name = "mapper_panoptic_sample"
    register_coco_panoptic(name, {}, root / "input_images", root / "panoptic_examples",
                           root / "panoptic_examples.json")
    yield name, root
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_panoptic_png_gives_thing_instances_and_panoptic_fpn_semantic_labels(panoptic_sample):
    """COCO panoptic sample: thing masks equal panopticapi's own detection-format conversion;
    an instance class t names ``thing_classes[t]`` and a stuff segment's semantic label 2 + k
    names ``stuff_classes[k]`` (0 things, 1 unlabelled background), each the category's name in
    panopticapi's category file."""
    name, root = panoptic_sample
    meta = MetadataCatalog.get(name)
    categories = json.loads((root.parent / "panoptic_coco_categories.json").read_text())
    category_names = {c["id"]: c["name"] for c in categories}
    raw = {a["image_id"]: a for a in json.loads((root / "panoptic_examples.json").read_text())[
        "annotations"]}
    detection = json.loads((root / "panoptic_coco_detection_format.json").read_text())
    mapper = _mapper(True, "INPUT.MIN_SIZE_TRAIN", (0,), "MODEL.META_ARCHITECTURE", "PanopticUNet")
    stuff_seen = 0
    for dataset_dict in DatasetCatalog.get(name):
        out = mapper(dataset_dict)
        expected = [a for a in detection["annotations"] if a["image_id"] == dataset_dict["image_id"]
                    and a["category_id"] in meta.thing_dataset_id_to_contiguous_id
                    and not a["iscrowd"]]
        masks = out["instances"]["masks"].numpy()
        assert len(masks) == len(expected) > 0
        for mask, ann in zip(masks, expected):
            assert np.array_equal(mask, mask_util.decode(ann["segmentation"]))
        classes = out["instances"]["classes"].tolist()
        assert [meta.thing_classes[t] for t in classes] == [
            category_names[a["category_id"]] for a in expected]
        assert all(0 <= t < len(meta.thing_dataset_id_to_contiguous_id) for t in classes)
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in expected)]
        assert out["instances"]["boxes"].tolist() == xyxy
        ids = read_panoptic_ids(dataset_dict["pan_seg_file_name"])
        sem_seg = out["sem_seg"].numpy()
        assert (sem_seg[ids == 0] == 1).all()
        for segment in raw[dataset_dict["image_id"]]["segments_info"]:
            labels = np.unique(sem_seg[ids == segment["id"]]).tolist()
            assert len(labels) == 1
            if segment["category_id"] in meta.thing_dataset_id_to_contiguous_id:
                assert labels == [0]
            else:
                assert 2 <= labels[0] < 2 + len(meta.stuff_dataset_id_to_contiguous_id)
                assert meta.stuff_classes[labels[0] - 2] == category_names[segment["category_id"]]
                stuff_seen += 1
    assert stuff_seen > 0


def test_panoptic_model_keeps_the_semantic_png_ignore_region_void(tmp_path):
    """Converter output has both PNGs: PanopticUNet's labels come from the panoptic one, with
    the semantic PNG's ignore pixels (void in the panoptic PNG, like background) kept void."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(image)
    ids = np.zeros((4, 6, 3), np.uint8)
    ids[:2, :3, 0] = 1  # segment 1: a thing
    Image.fromarray(ids).save(tmp_path / "pan.png")
    semantic = np.zeros((4, 6), np.uint8)
    semantic[:2, :3] = 3  # category 3 in the all-category labels
    semantic[3, 4:] = 255
    Image.fromarray(semantic).save(tmp_path / "sem.png")
    dataset_dict = {
        "file_name": str(image), "height": 4, "width": 6, "image_id": 1,
        "pan_seg_file_name": str(tmp_path / "pan.png"),
        "sem_seg_file_name": str(tmp_path / "sem.png"),
        "segments_info": [{"id": 1, "category_id": 2, "isthing": True, "iscrowd": 0}],
    }
    panoptic = _mapper(True, "INPUT.MIN_SIZE_TRAIN", (0,), "MODEL.META_ARCHITECTURE",
                       "PanopticUNet")(dataset_dict)
    expected = np.ones((4, 6), np.int64)
    expected[:2, :3] = 0
    expected[3, 4:] = 255
    assert np.array_equal(panoptic["sem_seg"].numpy(), expected)
    assert panoptic["instances"]["classes"].tolist() == [2]
    semantic_model = _mapper(True, "INPUT.MIN_SIZE_TRAIN", (0,))(dataset_dict)
    assert np.array_equal(semantic_model["sem_seg"].numpy(), semantic)


@pytest.mark.parametrize("is_train", [False, True])
def test_mapper_built_from_cfg_equals_the_keyword_construction(dataset_dict, is_train):
    """Detectron2's ``DatasetMapper(cfg, is_train=...)`` gives the mapper that
    ``DatasetMapper(**DatasetMapper.from_config(cfg, ...))`` gives."""
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MIN_SIZE_TEST", 32,
                         "INPUT.RANDOM_FLIP", "none", "INPUT.FORMAT", "RGB"])
    from_cfg = DatasetMapper(cfg, is_train=is_train)(copy.deepcopy(dataset_dict))
    spelled = DatasetMapper(**DatasetMapper.from_config(cfg, is_train=is_train))(dataset_dict)
    assert from_cfg.keys() == spelled.keys()
    assert ("instances" in from_cfg) == is_train and from_cfg["image"].shape == (3, 32, 48)
    assert torch.equal(from_cfg["image"], spelled["image"])
    assert from_cfg["image"][0, 0, 0] == 200  # RGB: the red channel first
    if is_train:
        assert torch.equal(from_cfg["sem_seg"], spelled["sem_seg"])
        for key in ("boxes", "classes", "masks"):
            assert torch.equal(from_cfg["instances"][key], spelled["instances"][key])
