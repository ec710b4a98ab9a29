"""``DefaultTrainer``: the training run ``tools/train_net.py`` drives, as in Detectron2.

It builds the model, optimizer, LR schedule, data loader and checkpointer from the config,
registers the standard hooks, and evaluates ``DATASETS.TEST`` with the evaluator that fits the
meta-architecture. ``resume_or_load`` either loads ``MODEL.WEIGHTS`` (fine-tuning: parameters
of another shape are skipped with a warning) or, with ``--resume``, restores model, optimizer,
scheduler, gradient scaler, iteration, every rank's own RNG states and hook states from
``OUTPUT_DIR``.
"""

import logging
import os
import random
from typing import Any

import numpy as np
import torch
from fvcore.nn.precise_bn import get_bn_modules
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from d2seg.checkpoint import D2SegCheckpointer, check_free_space, estimated_checkpoint_bytes
from d2seg.config import CfgNode
from d2seg.data.build import build_detection_test_loader, build_detection_train_loader
from d2seg.data.datasets import resolve_dataset
from d2seg.data.mapper import DatasetMapper
from d2seg.data.samplers import shared_random_seed
from d2seg.engine import hooks
from d2seg.engine.batchnorm_statistics import stale_statistics_warning
from d2seg.engine.train_loop import SimpleTrainer
from d2seg.engine.run_metadata import inference_metadata
from d2seg.evaluation import (
    DatasetEvaluator,
    build_evaluator,
    inference_on_dataset,
    report_folder,
    write_report,
)
from d2seg.modeling import build_model
from d2seg.modeling.meta_arch.declarations import headline_metric
from d2seg.solver import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    linear_scaling_warning,
)
from d2seg.utils import comm
from d2seg.utils.events import JSONWriter, ProgressWriter, TensorboardWriter

logger = logging.getLogger(__name__)


def main_metric(cfg: CfgNode) -> str:
    """``SOLVER.EARLY_STOP.METRIC``, or the meta-architecture's headline metric when empty."""
    return cfg.SOLVER.EARLY_STOP.METRIC or headline_metric(cfg)


def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
    """Detectron2's ``SOLVER.REFERENCE_WORLD_SIZE`` rule: when the job has ``num_workers``
    processes instead of the reference number, scale the batch and LR linearly and the
    schedule inversely. Returns ``cfg`` itself when no scaling applies, else a frozen copy."""
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if reference == 0 or reference == num_workers:
        return cfg
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    scale = num_workers / reference
    solver = cfg.SOLVER
    solver.IMS_PER_BATCH = bs = int(round(solver.IMS_PER_BATCH * scale))
    solver.BASE_LR = lr = solver.BASE_LR * scale
    solver.MAX_ITER = max_iter = int(round(solver.MAX_ITER / scale))
    solver.WARMUP_ITERS = int(round(solver.WARMUP_ITERS / scale))
    solver.STEPS = tuple(int(round(s / scale)) for s in solver.STEPS)
    solver.CHECKPOINT_PERIOD = int(round(solver.CHECKPOINT_PERIOD / scale))
    cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
    solver.REFERENCE_WORLD_SIZE = num_workers
    logger.info(
        f"Auto-scaling the config to {num_workers} workers: IMS_PER_BATCH={bs}, "
        f"BASE_LR={lr}, MAX_ITER={max_iter}"
    )
    if frozen:
        cfg.freeze()
    return cfg


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain data (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rank_rng_state(states: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Restore this process's entry of ``states``, the :func:`capture_rng_state` of every rank
    indexed by rank, as checkpoints hold them.

    When the checkpoint was saved with another number of processes nothing is restored and a
    warning is logged: every process keeps its ``SEED + rank`` seeding (reusing another rank's
    state would give two processes the same augmentation stream). A different world size
    reshards the data anyway, so such a resume is not an exact continuation in any case.
    """
    if isinstance(states, dict):  # checkpoints written before RNG states were kept per rank
        states = [states]
    world_size = comm.get_world_size()
    if len(states) != world_size:
        logger.warning(
            f"Checkpoint saved with {len(states)} processes, resuming with {world_size}: RNG "
            f"states not restored, each process keeps its SEED + rank seeding and the run is not "
            f"an exact continuation; fix: resume with --num-gpus {len(states)} to continue exactly"
        )
        return
    restore_rng_state(states[comm.get_rank()])


def create_ddp_model(model: nn.Module) -> nn.Module:
    """Wrap in DistributedDataParallel when the job has several processes."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    # Buffers (BatchNorm statistics) are synced once at start, then stay per process as in
    # Detectron2: a broadcast before every forward would cost time for little gain.
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def _amp_dtype(cfg: CfgNode) -> torch.dtype | None:
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    return torch.bfloat16 if cfg.SOLVER.AMP.DTYPE == "bfloat16" else torch.float16


class DefaultTrainer(SimpleTrainer):
    """Training with the config's model, data, solver, checkpoints, evaluation and logging.

    ``PLOTS``: whether the run draws figures, i.e. the PNGs of each evaluation report and
    ``training_curves.png`` / ``per_class_metrics.png`` after training. A subclass whose runs
    nobody looks at one by one (the trials of ``tools/tune.py``) sets it to ``False`` and keeps
    every other output (``metrics.json``, ``results.json``, ``report.md``'s tables,
    checkpoints)."""

    PLOTS = True

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg
        model = build_model(cfg)
        optimizer = build_optimizer(cfg, model)
        super().__init__(
            create_ddp_model(model),
            data_loader=[],
            optimizer=optimizer,
            grad_clipper=build_gradient_clipper(cfg),
            amp_dtype=_amp_dtype(cfg),
        )
        self.unwrapped_model = model
        self.scheduler = build_lr_scheduler(cfg, optimizer)
        checkpointables: dict[str, Any] = {"optimizer": optimizer, "scheduler": self.scheduler}
        if self.grad_scaler is not None:
            checkpointables["grad_scaler"] = self.grad_scaler
        self.checkpointer = D2SegCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            metadata=inference_metadata(cfg),
            save_to_disk=comm.is_main_process(),
            **checkpointables,
        )
        if comm.is_main_process():
            check_free_space(cfg.OUTPUT_DIR, estimated_checkpoint_bytes(model, optimizer))
        warning = linear_scaling_warning(cfg)
        if warning:
            logger.warning(warning)
        self.register_hooks(self.build_hooks())

    # The seed of the training batches (images, grouping, augmentation); from the checkpoint
    # when resuming, so that also a run without SEED continues with the same data stream.
    _data_seed: int | None = None

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR: continue that run exactly (temp files
        of a save the previous process was killed in are deleted first). Otherwise load
        ``MODEL.WEIGHTS`` (model only) and start at iteration 0.

        Continuing restores the model, optimizer, scheduler, gradient scaler, iteration, every
        rank's RNG states, the data seed and the hook states; the data loader then recomputes
        the batches from the data seed and the iteration (``build_detection_train_loader``).
        """
        can_resume = resume and self.checkpointer.has_checkpoint()
        if resume:
            for path in self.checkpointer.remove_interrupted_saves():
                logger.info(f"Removed {path}, left by an interrupted checkpoint save")
        if resume and not can_resume:
            logger.info(f"No checkpoint in {self.cfg.OUTPUT_DIR} to resume; starting anew")
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=can_resume)
        self.start_iter = 0
        self._data_seed = None
        if can_resume:
            self.start_iter = extra.get("iteration", -1) + 1
            self._data_seed = extra.get("data_seed")
            if "rng" in extra:
                restore_rank_rng_state(extra["rng"])
            self.load_hook_states(extra.get("hooks", {}))

    def train(self) -> None:  # type: ignore[override]
        """Train from ``start_iter`` (see :meth:`resume_or_load`) to ``SOLVER.MAX_ITER``.

        SIGINT/SIGTERM stop it after the current step with a checkpoint ``model_XXXXXXX.pth``
        and raise :class:`~d2seg.utils.cli.Interrupted` (see ``d2seg.engine.train_loop``).
        """
        start_iter = self.start_iter
        if start_iter >= self.cfg.SOLVER.MAX_ITER:
            logger.info(f"Nothing to do: the run already reached SOLVER.MAX_ITER {start_iter}")
            return
        if self._data_seed is None:
            self._data_seed = self.cfg.SEED if self.cfg.SEED >= 0 else shared_random_seed()
        self.data_loader = build_detection_train_loader(
            self.cfg, start_iter=start_iter, seed=self._data_seed
        )
        self._data_iter = None
        super().train(start_iter, self.cfg.SOLVER.MAX_ITER)

    def _checkpoint_state(self) -> dict[str, Any]:
        # A collective: PeriodicCheckpointer calls it on every rank before rank 0 saves, so
        # that --resume gives each rank its own RNG state back.
        return {
            "rng": comm.all_gather(capture_rng_state()),
            "data_seed": self._data_seed,
            "hooks": self.hook_states(),
        }

    def build_hooks(self) -> list[hooks.HookBase]:
        cfg = self.cfg
        has_test = bool(cfg.DATASETS.TEST)
        metric = main_metric(cfg)
        out: list[hooks.HookBase] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(self.optimizer, self.scheduler),
        ]
        if cfg.TEST.PRECISE_BN.ENABLED and not get_bn_modules(self.model):
            logger.info("TEST.PRECISE_BN: the model has no BatchNorm that trains; nothing to do")
        elif cfg.TEST.PRECISE_BN.ENABLED:
            out.append(hooks.PreciseBN(
                cfg.TEST.EVAL_PERIOD,
                self.model,
                lambda: build_detection_train_loader(cfg, seed=self._data_seed),
                cfg.TEST.PRECISE_BN.NUM_ITER,
            ))
        elif message := stale_statistics_warning(self.model, cfg):
            logger.warning(message)
        out.append(hooks.PeriodicCheckpointer(
            self.checkpointer,
            cfg.SOLVER.CHECKPOINT_PERIOD,
            self._checkpoint_state,
            max_to_keep=cfg.SOLVER.CHECKPOINT_KEEP,
        ))
        mode = cfg.SOLVER.EARLY_STOP.MODE
        if has_test and cfg.TEST.VALIDATION_LOSS:
            # Test-time resizing, but annotations kept: the losses need targets.
            mapper_args = DatasetMapper.from_config(cfg, is_train=False) | {"is_train": True}
            val_loader = build_detection_test_loader(
                cfg, cfg.DATASETS.TEST, mapper=DatasetMapper(**mapper_args)
            )
            out.append(hooks.ValidationLoss(cfg.TEST.EVAL_PERIOD, self.model, val_loader))
        if has_test:
            out.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate_current_model))
            best = hooks.BestCheckpointer(self.checkpointer, metric, mode)
            out.append(best)
            out.append(hooks.BestModelEvaluation(best, lambda m, d: self.test(cfg, m, d)))
        if cfg.SOLVER.EARLY_STOP.PATIENCE > 0:
            out.append(hooks.EarlyStopping(metric, mode, cfg.SOLVER.EARLY_STOP.PATIENCE))
        if comm.is_main_process():
            writers = [
                JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json")),
                TensorboardWriter(cfg.OUTPUT_DIR),
                ProgressWriter(cfg.SOLVER.MAX_ITER),
            ]
            out.append(hooks.PeriodicWriter(writers, period=20))
            if self.PLOTS:
                out.append(hooks.TrainingCurves(cfg.OUTPUT_DIR))
        return out

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_dir: str) -> DatasetEvaluator:
        """The evaluators of the tasks the meta-architecture declares
        (:func:`d2seg.evaluation.build_evaluator`); override for others."""
        return build_evaluator(cfg, dataset_name, output_dir)

    def _evaluate_current_model(self) -> dict[str, dict[str, float]]:
        return self.test(self.cfg, self.unwrapped_model, f"the model at iteration {self.iter + 1}")

    @classmethod
    def test(
        cls, cfg: CfgNode, model: nn.Module, description: str = ""
    ) -> dict[str, dict[str, float]]:
        """Evaluate ``model`` on every ``DATASETS.TEST`` entry; write each dataset's report to
        ``OUTPUT_DIR/inference/<dataset>/`` (``description`` says which model it is, e.g.
        "model_best.pth (iteration 40)"). Returns the results of the last dataset (flat
        ``{task: {metric: value}}``, like Detectron2 with one test set) — all are logged."""
        results: dict[str, dict[str, float]] = {}
        for entry in cfg.DATASETS.TEST:
            output_dir = report_folder(cfg.OUTPUT_DIR, entry)
            # A json path is registered under its absolute path; evaluators look it up by that.
            name = resolve_dataset(entry)
            loader = build_detection_test_loader(cfg, name)
            evaluator = cls.build_evaluator(cfg, name, output_dir)
            results = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                write_report(
                    results,
                    output_dir,
                    dataset_name=name,
                    model=description,
                    plots=cls.PLOTS,
                    **evaluator.report_inputs(),
                )
                for task, metrics in results.items():
                    shown = ", ".join(
                        f"{k}={v:.2f}"
                        for k, v in metrics.items()
                        if isinstance(v, float) and "-" not in k
                    )
                    logger.info(f"[{name}] {task}: {shown}")
                logger.info(f"Report written to {os.path.join(output_dir, 'report.md')}")
        return results
