"""Search spaces: parsed into Optuna distributions, checked with the config's own rules."""

import optuna
import pytest

from d2seg.config import get_cfg
from d2seg.errors import ConfigError
from d2seg.tuning.space import SearchSpace

from .conftest import REPO_ROOT, UNET


@pytest.fixture(scope="module")
def cfg():
    cfg = get_cfg()
    cfg.merge_from_file(UNET)
    return cfg


def sample_many(space: SearchSpace, n: int = 30) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    samples = []
    for _ in range(n):
        trial = study.ask()
        samples.append(space.sample(trial))
        study.tell(trial, 0.0)
    return samples


def test_every_kind_samples_values_of_the_config_type_within_bounds(cfg):
    space = SearchSpace.from_dict({
        "SOLVER.BASE_LR": {"loguniform": [1e-4, 1e-2]},
        "MODEL.SEM_SEG_HEAD.DICE_WEIGHT": {"uniform": [0.2, 2]},
        "SOLVER.IMS_PER_BATCH": {"int": [2, 16, "log"]},
        "INPUT.MIN_SIZE_TRAIN": {"int": [64, 128]},
        "MODEL.SEM_SEG_HEAD.LOSS": {"choice": ["ce", "dice", "ce+dice"]},
        "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS": {"choice": [[64, 32, 16, 16, 8], [32, 16, 8, 8, 4]]},
    }, cfg)
    samples = sample_many(space)
    for s in samples:
        assert 1e-4 <= s["SOLVER.BASE_LR"] <= 1e-2 and isinstance(s["SOLVER.BASE_LR"], float)
        assert 0.2 <= s["MODEL.SEM_SEG_HEAD.DICE_WEIGHT"] <= 2
        assert 2 <= s["SOLVER.IMS_PER_BATCH"] <= 16 and isinstance(s["SOLVER.IMS_PER_BATCH"], int)
        (size,) = s["INPUT.MIN_SIZE_TRAIN"]
        assert 64 <= size <= 128
        assert s["MODEL.SEM_SEG_HEAD.LOSS"] in ("ce", "dice", "ce+dice")
        assert s["MODEL.SEM_SEG_HEAD.DECODER_CHANNELS"] in ((64, 32, 16, 16, 8), (32, 16, 8, 8, 4))
    assert len({s["MODEL.SEM_SEG_HEAD.LOSS"] for s in samples}) == 3
    # A list choice is recorded by Optuna as its label and maps back to the config value.
    params = {"MODEL.SEM_SEG_HEAD.DECODER_CHANNELS": "[32, 16, 8, 8, 4]"}
    assert space.config_values(params) == {"MODEL.SEM_SEG_HEAD.DECODER_CHANNELS": (32, 16, 8, 8, 4)}


@pytest.mark.parametrize("raw, message", [
    ({"SOLVER.BASE_LRR": {"uniform": [0.1, 0.2]}},
     r"space.yaml: unknown config key SOLVER.BASE_LRR; did you mean SOLVER.BASE_LR"),
    ({"SOLVER.IMS_PER_BATCH": {"uniform": [2, 16]}},
     r"SOLVER.IMS_PER_BATCH expects a int, got 2.0"),
    ({"MODEL.SEM_SEG_HEAD.LOSS": {"choice": ["ce", "focal"]}},
     r"MODEL.SEM_SEG_HEAD.LOSS = 'focal' is not one of"),
    ({"SOLVER.BASE_LR": {"loguniform": [0, 0.1]}}, r"SOLVER.BASE_LR: a log scale needs low > 0"),
    ({"SOLVER.BASE_LR": {"uniform": [0.1, 0.01]}}, r"low 0.1 must be below high 0.01"),
    ({"SOLVER.BASE_LR": {"normal": [0, 1]}}, r"SOLVER.BASE_LR: expected one of \{loguniform"),
    ({"SOLVER.IMS_PER_BATCH": {"int": [2, 16, "exp"]}}, r"int takes \[low, high\] or"),
    ({"SOLVER": {"uniform": [0, 1]}}, r"SOLVER is a group of keys"),
    ({}, r"the search space is empty"),
])
def test_mistakes_name_the_key_and_the_fix(cfg, raw, message):
    with pytest.raises(ConfigError, match=message) as error:
        SearchSpace.from_dict(raw, cfg, "space.yaml")
    assert "fix" in str(error.value) or "did you mean" in str(error.value)


def test_exponents_without_a_dot_are_numbers_as_in_the_issue(cfg, space_file):
    # PyYAML reads 1e-4 as a string (YAML 1.1); users write it so.
    space = SearchSpace.from_file(space_file("SOLVER.BASE_LR: {loguniform: [1e-4, 1e-2]}\n"), cfg)
    (dimension,) = space.dimensions
    assert (dimension.low, dimension.high) == (1e-4, 1e-2)


def test_file_that_is_not_yaml_or_not_a_mapping(cfg, space_file):
    with pytest.raises(ConfigError, match=r"space.yaml line 2: not valid YAML"):
        SearchSpace.from_file(space_file("SOLVER.BASE_LR: {uniform: [0.1, 0.2]\n"), cfg)
    with pytest.raises(ConfigError, match=r"a search space is a mapping of config keys"):
        SearchSpace.from_file(space_file("- SOLVER.BASE_LR\n"), cfg)
    with pytest.raises(ConfigError, match=r"the search space is empty"):
        SearchSpace.from_file(space_file("# nothing yet\n"), cfg)


@pytest.mark.parametrize("space, config", [
    ("unet.yaml", "carvana/unet_R_50_gray_512.yaml"),
    ("unet.yaml", "tiny/unet_R_18_tiny.yaml"),
    ("mask_rcnn.yaml", "balloon/mask_rcnn_R_50_FPN.yaml"),
    ("mask_rcnn.yaml", "tiny/mask_rcnn_R_18_tiny.yaml"),
])
def test_shipped_spaces_fit_their_configs(space, config):
    configs = REPO_ROOT / "configs"
    cfg = get_cfg()
    cfg.merge_from_file(str(configs / config))
    loaded = SearchSpace.from_file(configs / "tune" / space, cfg)
    assert len(loaded.dimensions) >= 4
