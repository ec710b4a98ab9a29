"""Optimizer groups and LR schedules behave as Detectron2's."""

import io

import pytest
import torch
from torch import nn

from d2seg.config import get_cfg
from d2seg.solver import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    linear_scaling_warning,
)


def solver_cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def lrs_over_training(cfg, model=None):
    model = model or nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_multistep_matches_detectron2_formula():
    cfg = solver_cfg("SOLVER.BASE_LR", "0.1", "SOLVER.MAX_ITER", "100", "SOLVER.STEPS",
                     "(60, 80)", "SOLVER.WARMUP_ITERS", "10", "SOLVER.WARMUP_FACTOR", "0.001")
    lrs = lrs_over_training(cfg)
    assert lrs[0] == pytest.approx(0.1 * 0.001)
    assert lrs[5] == pytest.approx(0.1 * (0.001 + (1 - 0.001) * 0.5))
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[59] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)
    assert lrs[80] == pytest.approx(0.001)


def test_cosine_ends_at_base_lr_end():
    cfg = solver_cfg("SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.BASE_LR", "0.1",
                     "SOLVER.BASE_LR_END", "0.001", "SOLVER.MAX_ITER", "50",
                     "SOLVER.WARMUP_ITERS", "0")
    lrs = lrs_over_training(cfg)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[25] == pytest.approx(0.001 + (0.1 - 0.001) * 0.5, rel=1e-6)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_scheduler_state_is_plain_data_and_resumes():
    cfg = solver_cfg("SOLVER.MAX_ITER", "30", "SOLVER.STEPS", "(20,)", "SOLVER.WARMUP_ITERS", "5")
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(22):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    opt2 = build_optimizer(cfg, nn.Linear(2, 2))
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_param_groups_norm_decay_bias_factor_and_frozen():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    model[2].weight.requires_grad_(False)
    cfg = solver_cfg("SOLVER.BASE_LR", "0.1", "SOLVER.WEIGHT_DECAY", "0.01",
                     "SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.BIAS_LR_FACTOR", "2.0")
    opt = build_optimizer(cfg, model)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model[0].weight)]["weight_decay"] == 0.01
    assert by_param[id(model[1].weight)]["weight_decay"] == 0.0
    assert by_param[id(model[0].bias)]["lr"] == pytest.approx(0.2)
    assert id(model[2].weight) not in by_param


def test_adamw_is_selectable():
    cfg = solver_cfg("SOLVER.OPTIMIZER", "AdamW")
    assert isinstance(build_optimizer(cfg, nn.Linear(2, 2)), torch.optim.AdamW)


def test_gradient_clipping_by_norm():
    cfg = solver_cfg("SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
                     "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1.0")
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 10.0)
    build_gradient_clipper(cfg)([p])
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert build_gradient_clipper(get_cfg()) is None


def test_linear_scaling_warning():
    assert linear_scaling_warning(solver_cfg("SOLVER.BASE_LR", "0.02")) is None
    message = linear_scaling_warning(solver_cfg("SOLVER.BASE_LR", "0.02", "SOLVER.IMS_PER_BATCH", "2"))
    assert "SOLVER.BASE_LR 0.0025" in message


def test_steps_at_or_beyond_max_iter_are_dropped_with_one_warning(caplog):
    cfg = solver_cfg("SOLVER.BASE_LR", "0.1", "SOLVER.MAX_ITER", "30", "SOLVER.STEPS",
                     "(20, 30, 40)", "SOLVER.WARMUP_ITERS", "0")
    with caplog.at_level("WARNING", logger="d2seg.solver.lr_scheduler"):
        lrs = lrs_over_training(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "SOLVER.STEPS" in warnings[0] and "SOLVER.MAX_ITER 30" in warnings[0]
    assert "[30, 40]" in warnings[0]
    assert lrs[19] == pytest.approx(0.1) and lrs[29] == pytest.approx(0.01)


def test_decreasing_steps_are_a_config_error_naming_the_key():
    from d2seg.errors import ConfigError

    cfg = solver_cfg("SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(80, 60)")
    with pytest.raises(ConfigError, match=r"SOLVER.STEPS \[80, 60\].*fix:"):
        build_lr_scheduler(cfg, build_optimizer(cfg, nn.Linear(2, 2)))
