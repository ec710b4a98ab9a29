"""tools/evaluate_coco.py on cocoapi's fake results: the published twelve numbers, exit 2 on bad
input."""

import json
import re
import runpy
import sys

import pytest

TOOL = "tools/evaluate_coco.py"
# cocoapi@8c9bcc3 results, computed with pycocotools 2.0.11 (README of the shared data).
EXACT_AP = {"segm": 0.3195452758576433, "bbox": 0.5045806987249628}


def run_tool(repo_root, monkeypatch, capsys, *args):
    """Run the tool in this process; return (exit code, stdout, stderr)."""
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(sys, "argv", [TOOL, *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(TOOL, run_name="__main__")
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def published_numbers(res_txt, iou_type):
    """The twelve numbers (3 decimals) that cocoapi printed for ``iou_type``."""
    section = res_txt.read_text().split(f"type={iou_type}")[1].split("type=")[0]
    return [float(v) for v in re.findall(r"\] = (-?[\d.]+)", section)]


def printed_numbers(out):
    return [float(v) for v in re.findall(r"\] = (-?[\d.e+-]+)$", out, re.MULTILINE)]


@pytest.fixture(scope="module")
def fixtures(shared_data):
    return shared_data / "cocoeval_fixtures"


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_prints_the_published_numbers(fixtures, repo_root, monkeypatch, capsys, iou_type):
    gt = fixtures / "faster_coco_eval/cocoapi/instances_val2014_100.json"
    dt = fixtures / f"cocoapi_results/instances_val2014_fake{iou_type}100_results.json"
    code, out, _ = run_tool(repo_root, monkeypatch, capsys, "--gt", gt, "--dt", dt,
                            "--iou-type", iou_type)
    assert code == 0
    numbers = printed_numbers(out)
    published = published_numbers(fixtures / "cocoapi_results/val2014_fake_eval_res.txt",
                                  iou_type)
    assert len(numbers) == len(published) == 12
    assert [round(n, 3) for n in numbers] == published
    assert numbers[0] == pytest.approx(EXACT_AP[iou_type], abs=1e-9)
    code, out, _ = run_tool(repo_root, monkeypatch, capsys, "--gt", gt, "--dt", dt,
                            "--iou-type", iou_type, "--backend", "faster")
    assert code == 0
    assert printed_numbers(out) == pytest.approx(numbers, abs=1e-4)


def test_writes_the_report(fixtures, repo_root, monkeypatch, capsys, tmp_path):
    folder = fixtures / "faster_coco_eval"
    code, out, _ = run_tool(repo_root, monkeypatch, capsys, "--gt", folder / "gt_dataset.json",
                            "--dt", folder / "dt_dataset.json", "--output", tmp_path / "report")
    assert code == 0
    assert printed_numbers(out)[0] == pytest.approx(0.6947194719471946, abs=1e-12)
    report = (tmp_path / "report/report.md").read_text()
    for name in ("cloud", "heart", "arrow", "star"):
        assert f"| {name} |" in report
    assert (tmp_path / "report/pr_curves_segm.png").is_file()
    assert json.loads((tmp_path / "report/results.json").read_text())["segm"]["AP"] > 0


def test_bad_results_file_is_one_line_and_exit_2(fixtures, repo_root, monkeypatch, capsys,
                                                 tmp_path):
    folder = fixtures / "faster_coco_eval"
    detections = json.loads((folder / "dt_dataset.json").read_text())
    detections[4]["image_id"] = 12345
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(detections))
    code, out, err = run_tool(repo_root, monkeypatch, capsys, "--gt", folder / "gt_dataset.json",
                              "--dt", bad)
    assert code == 2
    assert err.count("\n") == 1 and "bad.json: [4]: image_id 12345" in err
    assert "Traceback" not in err
