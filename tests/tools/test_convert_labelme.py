"""tools/convert_labelme.py as a user runs it: a summary on success, one line + exit 2 on error."""

import json
import math
import subprocess
import sys

import pytest
from PIL import Image


def _run(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "tools" / "convert_labelme.py"), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )


def _folder(root, shapes=None):
    """A folder with a.json/a.png (one polygon) and b.json (``shapes`` or a polygon) + b.png."""
    root.mkdir()
    square = {"label": "cat", "points": [[2, 2], [20, 2], [20, 20]], "shape_type": "polygon"}
    for name, file_shapes in (("a", [square]), ("b", [square] if shapes is None else shapes)):
        Image.new("RGB", (32, 24), (40, 80, 120)).save(root / f"{name}.png")
        raw = {"version": "5.5.0", "shapes": file_shapes, "imagePath": f"{name}.png",
               "imageData": None, "imageHeight": 24, "imageWidth": 32}
        (root / f"{name}.json").write_text(json.dumps(raw), encoding="utf-8")
    return root


def test_success_prints_the_summary_and_workers_give_the_same_json(repo_root, tmp_path):
    src = _folder(tmp_path / "in")
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        done = _run(repo_root, "--input", src, "--output", out, "--split", "val=0.5",
                    "--workers", workers, "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["splits"] == {
            "train": {"images": 1, "annotations": 1, "images_without_objects": 0},
            "val": {"images": 1, "annotations": 1, "images_without_objects": 0},
        }
        runs[workers] = [(out / "annotations" / f"{s}.json").read_bytes() for s in ("train", "val")]
        assert json.loads((out / "report.json").read_text())["summary"] == summary
    assert runs[1] == runs[2]


def _points(points):
    return lambda raw: raw.update(shapes=[{"label": "cat", "points": points}])


BAD_INPUTS = {  # case: (edit of b.json's dict, or None to truncate the file; expected parts)
    "truncated json": (None, ("b.json", "JSON")),
    "no shapes key": (lambda raw: raw.pop("shapes"), ("b.json", "no 'shapes' key")),
    "1-point polygon": (_points([[1, 1]]), ("b.json: shapes[0]", "at least 3")),
    "NaN coordinate": (_points([[1, math.nan], [2, 2], [3, 1]]), ("b.json: shapes[0]", "NaN")),
    "missing image": (lambda raw: raw.update(imagePath="gone.png"), ("gone.png", "not found")),
    "imagePath escaping the root": (
        lambda raw: raw.update(imagePath="../../etc/passwd"), ("b.json", "outside the input")
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_output(repo_root, tmp_path, case):
    edit, expected = BAD_INPUTS[case]
    src = _folder(tmp_path / "in")
    text = (src / "b.json").read_text(encoding="utf-8")
    if edit is None:
        text = text[:40]
    else:
        raw = json.loads(text)
        edit(raw)
        text = json.dumps(raw)
    (src / "b.json").write_text(text, encoding="utf-8")
    done = _run(repo_root, "--input", src, "--output", tmp_path / "out")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert all(part in lines[0] for part in expected) and "fix" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_unknown_label_fails_only_with_strict(repo_root, tmp_path):
    dog = [{"label": "dog", "points": [[2, 2], [9, 2], [9, 9]], "shape_type": "polygon"}]
    src = _folder(tmp_path / "in", dog)
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat\n", encoding="utf-8")
    done = _run(repo_root, "--input", src, "--output", tmp_path / "out", "--labels", labels,
                "--strict")
    assert done.returncode == 2 and "'dog' is not in --labels" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    done = _run(repo_root, "--input", src, "--output", tmp_path / "out", "--labels", labels, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["report"] == {"skipped": 1}


def test_existing_output_and_unknown_format(repo_root, tmp_path):
    src = _folder(tmp_path / "in")
    (tmp_path / "out").mkdir()
    done = _run(repo_root, "--input", src, "--output", tmp_path / "out")
    assert done.returncode == 2 and "choose a new --output or delete it" in done.stderr
    done = _run(repo_root, "--input", src, "--output", tmp_path / "new", "--format", "xml")
    assert done.returncode == 2 and "labelme" in done.stderr and not (tmp_path / "new").exists()


def test_outputs_instances_writes_only_coco_and_bad_names_exit_2(repo_root, tmp_path):
    src = _folder(tmp_path / "in")
    done = _run(repo_root, "--input", src, "--output", tmp_path / "out", "--outputs", "instances", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == ["instances"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "annotations", "images", "report.json"
    ]
    done = _run(repo_root, "--input", src, "--output", tmp_path / "bad", "--outputs", "coco")
    assert done.returncode == 2 and "--outputs coco: unknown coco" in done.stderr
    assert not (tmp_path / "bad").exists()


def test_default_summary_is_a_table_a_person_reads(repo_root, tmp_path):
    src = _folder(tmp_path / "in")
    done = _run(repo_root, "--input", src, "--output", tmp_path / "out", "--split", "val=0.5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Converted 2 images from")
    assert "categories (1): 1 cat" in lines[1]
    assert lines[-1] == "  problems: none"


def test_group_by_keeps_groups_together_and_the_summary_counts_them(repo_root, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    square = {"label": "cat", "points": [[2, 2], [20, 2], [20, 20]], "shape_type": "polygon"}
    for car in range(4):
        for angle in range(3):
            name = f"car{car}_{angle}"
            Image.new("RGB", (32, 24), (40, 80, 120)).save(src / f"{name}.png")
            raw = {"version": "5.5.0", "shapes": [square], "imagePath": f"{name}.png",
                   "imageData": None, "imageHeight": 24, "imageWidth": 32}
            (src / f"{name}.json").write_text(json.dumps(raw), encoding="utf-8")
    args = ("--input", src, "--split", "val=0.25", "--group-by", "^([^_]+)_")
    done = _run(repo_root, *args, "--output", tmp_path / "out", "--json")
    assert done.returncode == 0, done.stderr
    splits = json.loads(done.stdout)["splits"]
    assert {k: (v["images"], v["groups"]) for k, v in splits.items()} == {
        "train": (9, 3), "val": (3, 1)
    }
    done = _run(repo_root, *args, "--output", tmp_path / "table")
    assert done.returncode == 0, done.stderr
    header, train, val = done.stdout.splitlines()[2:5]
    assert header.split()[-1] == "groups" and train.split()[-1] == "3" and val.split()[-1] == "1"
    done = _run(repo_root, "--input", src, "--output", tmp_path / "bad", "--group-by", "^x")
    assert done.returncode == 2 and "'car0_0.json' (stem 'car0_0') has no group" in done.stderr
