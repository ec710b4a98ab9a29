"""Honest splits: drawn among the items that converted, and whole groups with --group-by."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.split import item_groups, split_items
from d2seg.errors import ConfigError

SIZE = 16


def _carvana(root: Path, names: list[str], bad_masks: tuple[str, ...] = ()) -> Path:
    """``<name>.png`` + ``<name>_mask.png`` (a square); the masks of ``bad_masks`` have another
    size than their image, so the mask source skips those images."""
    root.mkdir(parents=True)
    for i, name in enumerate(names):
        Image.new("RGB", (SIZE, SIZE), (i * 7 % 256, 90, 30)).save(root / f"{name}.png")
        side = SIZE + 4 if name in bad_masks else SIZE
        mask = np.zeros((side, side), np.uint8)
        mask[4:12, 4:12] = 255
        Image.fromarray(mask).save(root / f"{name}_mask.png")
    return root


def _split_files(out: Path, split: str) -> set[str]:
    coco = json.loads(ConvertedLayout(out).annotations_json(split).read_text())
    return {image["file_name"] for image in coco["images"]}


def test_skipped_items_take_no_share_of_the_split(tmp_path):
    names = [f"im{i:02d}" for i in range(15)]
    src = _carvana(tmp_path / "in", names, bad_masks=("im01", "im04", "im09"))
    summary = convert_dataset(src, tmp_path / "out", fmt="masks", splits={"val": 0.25}, seed=1)
    assert summary["skipped_files"] == 3
    # 25 % of the 12 usable images (drawn among all 15, val got 4 minus the skipped ones in it)
    assert {k: v["images"] for k, v in summary["splits"].items()} == {"train": 9, "val": 3}
    out = tmp_path / "out"
    layout = ConvertedLayout(out)
    for split in ("train", "val"):
        for file_name in _split_files(out, split):
            png = layout.label_map_name(file_name)
            assert (layout.sem_seg_dir(split) / png).is_file()
            assert (layout.panoptic_dir(split) / png).is_file()
    assert sorted(p.name for p in (out / "sem_seg").iterdir()) == ["train", "val"]  # no staging


def test_group_split_never_shares_a_group_across_splits(tmp_path):
    names = [f"car{car}_{angle:02d}" for car in range(8) for angle in range(1, 5)]
    src = _carvana(tmp_path / "in", names, bad_masks=("car3_02",))
    splits = {"val": 0.25, "test": 0.125}
    summary = convert_dataset(
        src, tmp_path / "out", fmt="masks", splits=splits, seed=0, group_by=r"^([^_]+)_"
    )
    cars = {}
    for split in ("train", "val", "test"):
        cars[split] = {name.split("_")[0] for name in _split_files(tmp_path / "out", split)}
        assert summary["splits"][split]["groups"] == len(cars[split]) > 0
    assert not (cars["train"] & cars["val"] or cars["train"] & cars["test"] or
                cars["val"] & cars["test"])
    assert set().union(*cars.values()) == {f"car{car}" for car in range(8)}
    # whole cars of 4 images (car3 has 3): 31 images aiming at 8 val, 4 test
    images = {k: v["images"] for k, v in summary["splits"].items()}
    assert sum(images.values()) == 31 and 7 <= images["val"] <= 8 and 3 <= images["test"] <= 4


def test_group_assignment_is_seeded_and_aims_at_the_fractions():
    items = [f"g{g}_{i}.jpg" for g in range(20) for i in range(5)]
    groups = item_groups(items, r"^(g\d+)_")
    first = split_items(items, {"val": 0.2}, seed=0, groups=groups)
    assert first == split_items(items, {"val": 0.2}, seed=0, groups=groups)
    assert first != split_items(items, {"val": 0.2}, seed=1, groups=groups)
    assert {k: len(v) for k, v in first.items()} == {"train": 80, "val": 20}
    # without a capture group the whole match is the group
    assert item_groups(["a/car7_01.jpg", "car7_02.jpg"], r"car\d+") == ["car7", "car7"]


def test_an_item_outside_the_group_pattern_is_an_error_naming_it(tmp_path):
    src = _carvana(tmp_path / "in", ["car1_01", "car1_02", "loose"])
    with pytest.raises(ConfigError, match=r"'loose\.png' \(stem 'loose'\) has no group.*fix:"):
        convert_dataset(src, tmp_path / "out", fmt="masks", splits={"val": 0.5},
                        group_by=r"^([^_]+)_")
    with pytest.raises(ConfigError, match=r"--group-by '\(' is not a valid regular expression"):
        convert_dataset(src, tmp_path / "out", fmt="masks", group_by="(")
    assert not (tmp_path / "out").exists()
