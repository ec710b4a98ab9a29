"""ConvertedLayout: the converter writes where the dataset loader looks."""

from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.datasets import resolve_dataset
from d2seg.data.synthetic import make_balloons


def test_the_converter_writes_the_layout_the_loader_reads(tmp_path):
    src = make_balloons(tmp_path / "balloons", num_images=3, size=(48, 64), seed=0)
    out = tmp_path / "out"
    convert_dataset(src, out, splits={"val": 0.34})
    layout = ConvertedLayout(out)
    assert layout.report_json.is_file() and layout.images_dir.is_dir()
    for split in ("train", "val"):
        assert layout.annotations_json(split).is_file() and layout.panoptic_json(split).is_file()
        assert layout.sem_seg_dir(split).is_dir() and layout.panoptic_dir(split).is_dir()
    assert ConvertedLayout.of_split(layout.annotations_json("val")) == (layout, "val")
    assert ConvertedLayout.of_split(layout.panoptic_json("val")) is None  # not the instances
    name = resolve_dataset(str(layout.annotations_json("val")))
    try:
        meta = MetadataCatalog.get(name)
        assert meta.image_root == str(layout.images_dir.resolve())
        assert meta.sem_seg_root == str(layout.sem_seg_dir("val").resolve())
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert ConvertedLayout.label_map_name("sub/a.jpg") == "sub/a.png"
