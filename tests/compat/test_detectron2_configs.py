"""Detectron2's own model-zoo configs (../shared/data/detectron2_configs, pinned) merge unchanged,
build and run one inference, or are refused by the feature's name.

Only MODEL.DEVICE, MODEL.WEIGHTS (zoo URLs: nothing downloads) and the test input sizes are
overridden; each model sees one 64×64 image on CPU.
"""

import os
from pathlib import Path

import pytest
import torch

from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.modeling import build_model

# As tests/conftest.py's shared_data, read at collection time to parametrise.
SHARED = Path(os.environ.get(
    "D2SEG_TEST_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
))


def _zoo_files(shared: Path) -> list[Path]:
    root = shared / "detectron2_configs"
    return sorted(p for p in root.rglob("*.yaml") if p.name != "default_config.yaml")


ZOO_NAMES = [p.relative_to(SHARED / "detectron2_configs").as_posix() for p in _zoo_files(SHARED)]


# Config families d2seg refuses, and the feature each refusal names: none today, every pinned
# config runs (a newly pinned file that d2seg refuses goes here).
REFUSED: dict[str, str] = {}
OUTPUTS = {
    "GeneralizedRCNN": {"instances"},
    "SemanticSegmentor": {"sem_seg"},
    "PanopticFPN": {"instances", "sem_seg", "panoptic_seg"},
}
SIZE_OVERRIDES = ["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64]


def test_the_pinned_zoo_is_there(shared_data):
    files = _zoo_files(shared_data)
    assert len(files) == 43
    names = {p.relative_to(shared_data / "detectron2_configs").as_posix() for p in files}
    assert set(REFUSED) <= names


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_config_runs_or_is_refused_by_name(name: str, shared_data):
    path = shared_data / "detectron2_configs" / name
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *SIZE_OVERRIDES])
    if name in REFUSED:
        with pytest.raises(ConfigError, match=f"^not supported in d2seg: {REFUSED[name]}"):
            build_model(cfg)
        return
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        (output,) = model([{"image": image, "height": 48, "width": 40}])
    assert set(output) == OUTPUTS[cfg.MODEL.META_ARCHITECTURE]
    if "instances" in output:
        count = len(output["instances"]["scores"])
        assert output["instances"]["boxes"].shape == (count, 4)
        if cfg.MODEL.MASK_ON:
            assert output["instances"]["masks"].shape == (count, 48, 40)
    if "sem_seg" in output:
        assert output["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 48, 40)
