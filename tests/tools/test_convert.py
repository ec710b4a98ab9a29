"""tools/convert.py with the new formats, as a user runs it (tools/convert_labelme.py is the
same tool: tests/tools/test_convert_labelme.py)."""

import numpy as np
import pytest
import tifffile
from PIL import Image



def test_semantic_folder_converts_and_summarises(run_tool, tmp_path, camvid_folder):
    root = camvid_folder
    code, out, err = run_tool(
        "convert", "--format", "semantic", "--images", root / "images", "--labels-dir",
        root / "labels", "--label-suffix", "_L", "--class-names", "sky,road", "--ignore-value",
        "11", "--output", tmp_path / "out", "--split", "val=0.25",
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith("Converted 4 images from")
    assert "categories (2): 1 sky, 2 road" in out


def test_kaggle_rle_summary_states_the_order(run_tool, tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6), 0).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "train.csv").write_text("img,rle_mask\na.jpg,1 4 9 2\n")
    code, out, err = run_tool("convert", "--format", "kaggle-rle", "--csv", tmp_path / "train.csv",
                              "--images", tmp_path / "images", "--output", tmp_path / "out")
    assert code == 0, err
    assert "RLE order: row (from the Carvana header)" in out


def test_raster_prints_the_pixel_statistics_to_paste(run_tool, tmp_path):
    (tmp_path / "scenes").mkdir()
    (tmp_path / "labels").mkdir()
    scene = np.stack([np.full((32, 32), 10, np.uint16), np.full((32, 32), 30, np.uint16)])
    scene[1, :16] = 50
    tifffile.imwrite(tmp_path / "scenes" / "s.tif", scene, photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels" / "s.tif", np.ones((32, 32), np.uint8))
    code, out, err = run_tool("convert", "--format", "raster", "--images", tmp_path / "scenes",
                              "--labels-dir", tmp_path / "labels", "--class-names", "bg,crop",
                              "--patch", "16", "--output", tmp_path / "out")
    assert code == 0, err
    assert "    MODEL.PIXEL_MEAN: [10, 40]" in out and "    MODEL.PIXEL_STD: [0, 10]" in out


BROKEN = {  # case: (arguments after --output, expected parts of the one error line)
    "csv header": (["--format", "kaggle-rle", "--csv", "{root}/bad.csv", "--images", "{root}/images"],
                   ("bad.csv", "not a known Kaggle layout")),
    "missing csv": (["--format", "kaggle-rle", "--images", "{root}/images"], ("--csv",)),
    "coco without json": (["--format", "coco", "--coco", "{root}/gone.json", "--images",
                           "{root}/images"], ("gone.json", "not found")),
    "semantic without labels": (["--format", "semantic", "--images", "{root}/images",
                                 "--class-names", "a"], ("--labels-dir",)),
    "bad palette": (["--format", "semantic", "--images", "{root}/images", "--labels-dir",
                     "{root}/images", "--palette", "{root}/bad.csv"], ("bad.csv",)),
    "yolo without names": (["--format", "yolo", "--input", "{root}"], ("data.yaml",)),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_is_one_line_exit_2_and_nothing_written(run_tool, tmp_path, case):
    args, expected = BROKEN[case]
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 6), 0).save(tmp_path / "images" / "a.jpg")
    (tmp_path / "bad.csv").write_text("Id,Mask\na.jpg,1 2\n")
    code, out, err = run_tool("convert", "--output", tmp_path / "out",
                              *[a.format(root=tmp_path) for a in args])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert all(part in lines[0] for part in expected) and "fix" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
