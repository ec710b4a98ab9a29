"""get_cfg() holds Detectron2's whole default tree with Detectron2's defaults, and refuses the
features d2seg lacks by name (oracle: Detectron2's own dump, default_config.yaml)."""

import pytest
import yaml

from d2seg.config import get_cfg, get_key, validate_cfg
from d2seg.config.unsupported import D2SEG_DEFAULTS, UNSUPPORTED
from d2seg.errors import ConfigError

def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.fixture(scope="module")
def detectron2_defaults(shared_data) -> dict:
    dump = shared_data / "detectron2_configs" / "default_config.yaml"
    leaves = dict(_leaves(yaml.safe_load(dump.read_text())))
    assert len(leaves) == 192
    return leaves


def test_every_detectron2_key_exists_with_detectron2s_default(detectron2_defaults):
    cfg = get_cfg()
    ours = set(cfg.all_keys())
    missing = sorted(k for k in detectron2_defaults if k not in ours)
    assert not missing
    differ = {
        key: (_plain(get_key(cfg, key)), value)
        for key, value in detectron2_defaults.items()
        if _plain(get_key(cfg, key)) != _plain(value)
    }
    # Only the documented d2seg differences, each with its reason.
    assert set(differ) == set(D2SEG_DEFAULTS), differ
    assert all(D2SEG_DEFAULTS.values())


def test_the_default_config_passes_validation():
    validate_cfg(get_cfg())


def test_every_unsupported_entry_names_existing_keys():
    keys = get_cfg().all_keys()
    for entry in UNSUPPORTED:
        assert any(k == entry.key or (entry.key.endswith(".") and k.startswith(entry.key))
                   for k in keys), entry.key


@pytest.mark.parametrize(
    "key, value, feature",
    [
        ("MODEL.KEYPOINT_ON", True, "Keypoint R-CNN"),
        ("MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", 5, "Keypoint R-CNN"),
        ("MODEL.META_ARCHITECTURE", "RetinaNet", "RetinaNet"),
        ("MODEL.RETINANET.NUM_CLASSES", 3, "RetinaNet"),
        ("TEST.AUG.ENABLED", True, "test-time augmentation"),
        ("MODEL.ROI_HEADS.NAME", "RROIHeads", "Rotated R-CNN"),
        ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIPool", "RoIPool"),
        ("DATASETS.PROPOSAL_FILES_TRAIN", ("p.pkl",), "precomputed proposals"),
    ],
)
def test_a_feature_d2seg_lacks_is_refused_by_name(key, value, feature):
    cfg = get_cfg()
    cfg.merge_from_list([key, repr(value) if not isinstance(value, str) else value])
    with pytest.raises(ConfigError) as info:
        validate_cfg(cfg)
    message = str(info.value)
    assert message.startswith(f"not supported in d2seg: {feature}")
    assert f"({key})" in message and "fix:" in message
    assert "unknown" not in message


def test_unsupported_keys_at_their_defaults_merge_and_validate(tmp_path):
    config = tmp_path / "keys.yaml"
    config.write_text(
        "MODEL:\n  KEYPOINT_ON: False\n  RETINANET:\n    NUM_CLASSES: 80\n"
        "TEST:\n  AUG:\n    FLIP: True\nGLOBAL:\n  HACK: 2.0\n"
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    validate_cfg(cfg)
