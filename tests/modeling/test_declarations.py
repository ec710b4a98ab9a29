"""Meta-architectures say what they produce; the trainer, mapper and exporter ask them."""

import json

import pytest
from torch import nn

from d2seg.config import get_cfg
from d2seg.data.catalog import DatasetCatalog, MetadataCatalog
from d2seg.data.mapper import DatasetMapper
from d2seg.engine.trainer import DefaultTrainer, main_metric
from d2seg.errors import ConfigError
from d2seg.evaluation import COCOEvaluator, DatasetEvaluators, PanopticEvaluator, SemSegEvaluator
from d2seg.modeling.meta_arch.declarations import headline_metric, model_tasks
from d2seg.modeling.registry import META_ARCH_REGISTRY


@pytest.fixture
def toy_arch():
    """Registers a meta-architecture class built by the test; unregistered afterwards."""
    names = []

    def register(cls: type) -> str:
        META_ARCH_REGISTRY.register(cls)
        names.append(cls.__name__)
        return cls.__name__

    yield register
    for name in names:
        META_ARCH_REGISTRY._obj_map.pop(name)


@pytest.fixture
def sem_seg_dataset():
    name = "declarations_test_sem_seg"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(stuff_classes=["background", "crop", "road"], ignore_label=255)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_a_new_semantic_meta_architecture_gets_sem_seg_evaluation(toy_arch, sem_seg_dataset,
                                                                   tmp_path):
    class ToyFieldSegmenter(nn.Module):
        tasks = ("sem_seg",)

        @classmethod
        def headline_metric(cls, cfg):
            return "sem_seg/mIoU"

        @classmethod
        def class_counts(cls, cfg, metadata):
            return {"MODEL.SEM_SEG_HEAD.NUM_CLASSES": len(metadata.get("stuff_classes", []))}

    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = toy_arch(ToyFieldSegmenter)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    evaluator = DefaultTrainer.build_evaluator(cfg, sem_seg_dataset, str(tmp_path))
    assert isinstance(evaluator, SemSegEvaluator)
    assert main_metric(cfg) == "sem_seg/mIoU"


def test_an_undeclared_meta_architecture_is_told_what_to_declare(toy_arch, tmp_path):
    class ToyUndeclared(nn.Module):
        pass

    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = toy_arch(ToyUndeclared)
    with pytest.raises(ConfigError, match=r"ToyUndeclared does not declare.*tasks = \('sem_seg',\)"):
        DefaultTrainer.build_evaluator(cfg, "any", str(tmp_path))


@pytest.mark.parametrize(
    "arch, mask_on, num_classes, tasks, metric",
    [
        ("GeneralizedRCNN", True, 2, ("instances",), "segm/AP"),
        ("GeneralizedRCNN", False, 2, ("instances",), "bbox/AP"),
        ("SemanticSegmentor", False, 12, ("sem_seg",), "sem_seg/mIoU"),
        ("SemanticSegmentor", False, 1, ("sem_seg",), "sem_seg/IoU"),  # binary: foreground IoU
        ("PanopticUNet", True, 2, ("instances", "panoptic_seg"), "panoptic_seg/PQ"),
    ],
)
def test_builtin_declarations(arch, mask_on, num_classes, tasks, metric):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.MASK_ON = arch, mask_on
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    assert model_tasks(cfg) == tasks
    assert headline_metric(cfg) == metric
    cfg.SOLVER.EARLY_STOP.METRIC = "segm/AP50"
    assert main_metric(cfg) == "segm/AP50"  # the user's choice wins


def test_panoptic_models_get_coco_and_pq_and_their_mapper_panoptic_labels(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
        "annotations": [],
        "categories": [{"id": 1, "name": "person"}],
    }))
    name = "declarations_test_panoptic"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        thing_classes=["person"], thing_dataset_id_to_contiguous_id={1: 0}, json_file=str(gt)
    )
    try:
        cfg = get_cfg()
        cfg.merge_from_file("configs/tiny/panoptic_unet_R_18_tiny.yaml")
        evaluator = DefaultTrainer.build_evaluator(cfg, name, str(tmp_path))
        assert isinstance(evaluator, DatasetEvaluators)
        assert [type(e) for e in evaluator._evaluators] == [COCOEvaluator, PanopticEvaluator]
        assert DatasetMapper.from_config(cfg, is_train=True)["panoptic_semantic"]
        cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
        assert not DatasetMapper.from_config(cfg, is_train=True)["panoptic_semantic"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
