"""@configurable: Detectron2's construction from a cfg or from explicit arguments."""

import pytest

from d2seg.config import configurable, get_cfg


class _Solver:
    @configurable
    def __init__(self, *, lr: float, steps: int = 1, name: str = "sgd"):
        self.lr, self.steps, self.name = lr, steps, name

    @classmethod
    def from_config(cls, cfg, steps=3):
        return {"lr": cfg.SOLVER.BASE_LR, "steps": steps}


def _from_config(cfg, dataset, scale=1):
    return {"items": [dataset] * scale, "batch": cfg.SOLVER.IMS_PER_BATCH}


@configurable(from_config=_from_config)
def _loader(items, *, batch, workers=0):
    return items, batch, workers


def test_class_from_cfg_positional_keyword_and_extra_arguments():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.5
    solver = _Solver(cfg)
    assert (solver.lr, solver.steps, solver.name) == (0.5, 3, "sgd")
    assert _Solver(cfg, 7).steps == 7 and _Solver(cfg=cfg, steps=5).steps == 5
    # an argument from_config does not take goes to __init__ as is
    assert _Solver(cfg, name="adam").name == "adam"
    assert vars(_Solver(**_Solver.from_config(cfg))) == vars(_Solver(cfg))
    assert _Solver(lr=0.1).lr == 0.1  # no cfg: plain keyword construction


def test_function_from_cfg_or_explicit_arguments():
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 4
    assert _loader(cfg, "a", scale=2) == (["a", "a"], 4, 0)
    assert _loader(cfg, "a", workers=2) == (["a"], 4, 2)
    assert _loader(["x"], batch=1) == (["x"], 1, 0)
    assert _loader.from_config is _from_config


def test_a_class_without_from_config_is_a_clear_type_error():
    class Plain:
        @configurable
        def __init__(self, *, x):
            self.x = x

    with pytest.raises(TypeError, match="Plain uses @configurable and needs a from_config"):
        Plain(get_cfg())
