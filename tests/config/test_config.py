"""The config system: Detectron2's YAML habits and errors that say how to fix them."""

from pathlib import Path

import pytest

from d2seg.config import get_cfg, validate_cfg
from d2seg.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_follow_detectron2():
    cfg = get_cfg()
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80
    assert cfg.INPUT.MIN_SIZE_TRAIN == (800,)
    assert cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT == 4096
    validate_cfg(cfg)


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 0.5
    assert b.SOLVER.BASE_LR == 0.001


def test_base_is_relative_to_the_child_and_may_be_a_list(tmp_path):
    write(tmp_path / "bases/solver.yaml", "SOLVER:\n  BASE_LR: 0.02\n  MAX_ITER: 100\n")
    write(tmp_path / "bases/model.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 3\n")
    child = write(
        tmp_path / "exp/child.yaml",
        "_BASE_: ['../bases/solver.yaml', '../bases/model.yaml']\nSOLVER:\n  MAX_ITER: 7\n",
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(child))
    assert cfg.SOLVER.BASE_LR == 0.02
    assert cfg.SOLVER.MAX_ITER == 7  # the child wins over its bases
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3


def test_nested_base_chain(tmp_path):
    write(tmp_path / "a.yaml", "SEED: 1\nOUTPUT_DIR: a\n")
    write(tmp_path / "sub/b.yaml", "_BASE_: ../a.yaml\nSEED: 2\n")
    c = write(tmp_path / "sub/deeper/c.yaml", "_BASE_: ../b.yaml\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(c))
    assert (cfg.SEED, cfg.OUTPUT_DIR) == (2, "a")


def test_unknown_key_in_file_names_file_key_and_closest_key(tmp_path):
    bad = write(tmp_path / "bad.yaml", "MODEL:\n  ROI_HEADS:\n    NUM_CLASES: 3\n")
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_file(str(bad))
    msg = str(e.value)
    assert "bad.yaml" in msg and "MODEL.ROI_HEADS.NUM_CLASES" in msg
    assert "did you mean MODEL.ROI_HEADS.NUM_CLASSES" in msg


def test_misplaced_key_suggests_its_real_place():
    with pytest.raises(ConfigError, match="did you mean MODEL.ROI_HEADS.NUM_CLASSES"):
        get_cfg().merge_from_list(["MODEL.NUM_CLASSES", "3"])


def test_string_where_tuple_expected_says_add_trailing_comma(tmp_path):
    bad = write(tmp_path / "ds.yaml", 'DATASETS:\n  TRAIN: "balloon_train"\n')
    with pytest.raises(ConfigError, match="add a trailing comma"):
        get_cfg().merge_from_file(str(bad))
    with pytest.raises(ConfigError, match="add a trailing comma"):
        get_cfg().merge_from_list(["DATASETS.TRAIN", "balloon_train"])


def test_merge_from_list_parses_literals():
    cfg = get_cfg()
    cfg.merge_from_list(
        ["DATASETS.TRAIN", "('a', 'b')", "SOLVER.BASE_LR", "1", "MODEL.MASK_ON", "True"]
    )
    assert cfg.DATASETS.TRAIN == ("a", "b")
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.MODEL.MASK_ON is True


def test_wrong_type_and_odd_overrides_are_config_errors():
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER expects a int"):
        get_cfg().merge_from_list(["SOLVER.MAX_ITER", "many"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        get_cfg().merge_from_list(["SOLVER.MAX_ITER"])


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        get_cfg().merge_from_file(str(tmp_path / "nope.yaml"))
    broken = write(tmp_path / "broken.yaml", "MODEL:\n  MASK_ON: [True\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line \d+"):
        get_cfg().merge_from_file(str(broken))


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        get_cfg().merge_from_file(str(tmp_path / "a.yaml"))


def test_enumerated_values_are_checked_with_a_suggestion():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.SEM_SEG_HEAD.LOSS", "ce+dise"])
    with pytest.raises(ConfigError, match="did you mean 'ce\\+dice'"):
        validate_cfg(cfg)


def test_pixel_mean_must_match_input_format():
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.FORMAT", "L"])
    with pytest.raises(ConfigError, match="MODEL.PIXEL_MEAN"):
        validate_cfg(cfg)
    cfg.merge_from_list(["MODEL.PIXEL_MEAN", "[128.0]", "MODEL.PIXEL_STD", "[58.0]"])
    validate_cfg(cfg)


def test_dump_round_trips(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", "('x',)", "SOLVER.STEPS", "(10, 20)"])
    path = write(tmp_path / "dumped.yaml", cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(path))
    assert again == cfg


def test_python_literals_in_yaml_as_detectron2_configs_write_them(tmp_path):
    path = write(
        tmp_path / "d2.yaml",
        "INPUT:\n  MIN_SIZE_TRAIN: (640, 672, 704)\nSOLVER:\n  STEPS: (210000, 250000)\n"
        "DATASETS:\n  TRAIN: ('balloon_train',)\nOUTPUT_DIR: ./output/balloon\n",
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704)
    assert cfg.SOLVER.STEPS == (210000, 250000)
    assert cfg.DATASETS.TRAIN == ("balloon_train",)
    assert cfg.OUTPUT_DIR == "./output/balloon"


def test_string_values_that_look_like_literals_stay_strings():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.WEIGHTS", "1e-3", "OUTPUT_DIR", "[run]"])
    assert cfg.MODEL.WEIGHTS == "1e-3" and cfg.OUTPUT_DIR == "[run]"
