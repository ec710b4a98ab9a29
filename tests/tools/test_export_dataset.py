"""tools/export_dataset.py as a user runs it: a converted dataset → YOLO-seg or Labelme."""

import json

import yaml


def test_export_dataset_to_yolo_and_labelme(run_tool, tmp_path, camvid_folder):
    root = camvid_folder
    code, _, err = run_tool(
        "convert", "--format", "semantic", "--images", root / "images", "--labels-dir",
        root / "labels", "--label-suffix", "_L", "--class-names", "sky,road", "--ignore-value",
        "11", "--thing-classes", "road", "--output", tmp_path / "out", "--split", "val=0.25",
    )
    assert code == 0, err
    code, out, err = run_tool("export_dataset", tmp_path / "out", "--to", "yolo", "--output",
                              tmp_path / "yolo")
    assert code == 0, err
    assert "train" in out and (tmp_path / "yolo/labels/val").is_dir()
    data = yaml.safe_load((tmp_path / "yolo/data.yaml").read_text())
    # YOLO-seg holds instances: its classes are the thing classes (sky is stuff)
    assert data == {"path": ".", "names": {0: "road"}, "train": "images/train",
                    "val": "images/val"}
    lines = (tmp_path / "yolo/labels/train/a.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0"]  # the road: one thing instance
    code, out, err = run_tool("export_dataset", tmp_path / "out", "--to", "labelme", "--output",
                              tmp_path / "labelme", "--json")
    assert code == 0, err
    assert json.loads(out)["splits"] == {"train": {"images": 3, "instances": 3},
                                         "val": {"images": 1, "instances": 1}}
    code, _, err = run_tool("export_dataset", tmp_path / "nothing", "--to", "yolo", "--output",
                            tmp_path / "x")
    assert code == 2 and "not a converted dataset" in err and not (tmp_path / "x").exists()
