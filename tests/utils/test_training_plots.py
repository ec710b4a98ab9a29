"""training_curves.png and per_class_metrics.png: what a person reading them needs."""

import json

import pytest
from matplotlib.text import Text

from d2seg.evaluation.units import is_fraction
from d2seg.utils import training_plots
from d2seg.utils.training_plots import read_metrics, write_training_plots


def write_metrics(path, classes, evaluations=3):
    """metrics.json rows as a 100-iteration run writes them: losses every 20, evaluations."""
    rows = []
    for n, it in enumerate([0, 19, 39, 59, 79, 99]):
        rows.append({"iteration": it, "total_loss": 2.0 / (n + 1), "loss_sem_seg": 1.5 / (n + 1),
                     "loss_dice": 0.5 / (n + 1), "lr": 0.01, "time": 0.2})
    for e in range(evaluations):
        it = 99 - 20 * (evaluations - 1 - e)
        row = {"iteration": it, "sem_seg/mIoU": 50.0 + e, "sem_seg/fwIoU": 60.0,
               "sem_seg/Dice": 0.6 + e / 100, "sem_seg/MCC": 0.5, "validation_loss": 1.0}
        row |= {f"sem_seg/IoU-{name}": 10.0 + i + e for i, name in enumerate(classes)}
        row |= {f"sem_seg/Dice-{name}": 0.1 for name in classes}
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots save, by file name."""
    saved = {}
    save = training_plots.save_png

    def keep(figure, path):
        saved[path.name] = figure
        save(figure, path)

    monkeypatch.setattr(training_plots, "save_png", keep)
    return saved


def legend_labels(axes):
    legend = axes.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def assert_text_at_least_8pt(figure):
    texts = [t for t in figure.findobj(Text) if t.get_text() and t.get_visible()]
    assert texts and min(t.get_fontsize() for t in texts) >= 8


def test_curves_keep_percentages_and_fractions_apart_and_leave_out_per_class(tmp_path, figures):
    write_metrics(tmp_path / "metrics.json", ["road", "car", "sky"])
    written = write_training_plots(tmp_path)
    assert [p.name for p in written] == ["training_curves.png", "per_class_metrics.png"]
    curves = figures["training_curves.png"]
    panels = {a.get_title(): legend_labels(a) for a in curves.axes}
    losses = next(labels for title, labels in panels.items() if title.startswith("losses"))
    assert {"total_loss", "loss_sem_seg", "loss_dice", "validation_loss"} == set(losses)
    metric_panels = [labels for title, labels in panels.items() if title.startswith("evaluation")]
    assert len(metric_panels) == 2
    for labels in metric_panels:
        assert len({is_fraction(label.split(" ")[0]) for label in labels}) == 1  # never mixed
    shown = [label for labels in metric_panels for label in labels]
    assert "sem_seg/mIoU (%)" in shown and "sem_seg/Dice (0–1)" in shown
    assert not any("-" in label.split(" ")[0] for label in shown)  # no IoU-<class>
    for axes in curves.axes:  # legends outside the plotting area
        if axes.get_legend():
            assert axes.get_legend().get_bbox_to_anchor().x0 >= axes.get_window_extent().x1
    assert_text_at_least_8pt(curves)


def test_few_classes_are_lines_over_the_evaluations(tmp_path, figures):
    write_metrics(tmp_path / "metrics.json", ["road", "car", "sky"])
    write_training_plots(tmp_path)
    (axes,) = figures["per_class_metrics.png"].axes
    assert legend_labels(axes) == ["car", "road", "sky"]
    assert [len(line.get_xdata()) for line in axes.lines] == [3, 3, 3]
    assert axes.get_ylabel() == "sem_seg/IoU (%)"


def test_seventy_classes_are_the_last_evaluation_as_sorted_bars(tmp_path, figures):
    names = [f"class {i:02d}" for i in range(70)]
    write_metrics(tmp_path / "metrics.json", names)
    write_training_plots(tmp_path)
    figure = figures["per_class_metrics.png"]
    (axes,) = figure.axes
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert sorted(labels) == names
    widths = [bar.get_width() for bar in axes.patches]
    assert widths == sorted(widths)  # best class on top
    assert max(widths) == 10.0 + 69 + 2  # the last of 3 evaluations
    # one 0.2 in row per class: 9 pt labels do not overlap
    assert figure.get_size_inches()[1] >= 70 * 0.2
    assert_text_at_least_8pt(figure)


def test_a_repeated_iteration_after_resume_replaces_the_earlier_row(tmp_path):
    rows = [{"iteration": 19, "total_loss": 3.0}, {"iteration": 39, "total_loss": 2.0},
            {"iteration": 39, "total_loss": 1.0}]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_metrics(tmp_path / "metrics.json")["total_loss"] == ([19, 39], [3.0, 1.0])


def test_no_metrics_json_writes_nothing(tmp_path):
    assert write_training_plots(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
