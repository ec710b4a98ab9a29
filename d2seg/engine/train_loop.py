"""The training loop and its hook protocol (Detectron2's TrainerBase / SimpleTrainer).

A trainer runs ``run_step`` from ``start_iter`` to ``max_iter``; hooks are called before and
after training and around every step, in the order they were registered. A hook may end training
early by raising :class:`StopTraining` (early stopping).
"""

import logging
import math
import time
import weakref
from abc import ABC, abstractmethod
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from d2seg.errors import ConfigError
from d2seg.utils import comm
from d2seg.utils.events import EventStorage

logger = logging.getLogger(__name__)


class StopTraining(Exception):
    """Raised by a hook to end training after the current iteration (not an error)."""


class HookBase:
    """A training hook; override the moments you need. ``self.trainer`` is set on register."""

    trainer: "TrainerBase"

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after training, also when it failed: see ``trainer.completed``."""

    def before_step(self) -> None:
        """Called before every iteration."""

    def after_step(self) -> None:
        """Called after every successful iteration."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints so that ``--resume`` restores the hook."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class TrainerBase(ABC):
    """Runs hooks around ``run_step`` for iterations ``[start_iter, max_iter)``."""

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.completed = False
        self.storage = EventStorage()

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = weakref.proxy(self)
            self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.storage = EventStorage(start_iter)
        self.completed = False
        try:
            for hook in self._hooks:
                hook.before_train()
            for self.iter in range(start_iter, max_iter):
                self.storage.iter = self.iter
                for hook in self._hooks:
                    hook.before_step()
                self.run_step()
                for hook in self._hooks:
                    hook.after_step()
            self.completed = True
        except StopTraining as stop:
            logger.info(f"Training stopped at iteration {self.iter + 1}: {stop}")
            self.completed = True
        finally:
            # Also after a failure, so writers flush what was logged before it; hooks that
            # should act only on success (final eval, final checkpoint) check self.completed.
            for hook in self._hooks:
                hook.after_train()

    @abstractmethod
    def run_step(self) -> None:
        """One training iteration."""

    def hook_states(self) -> dict[str, dict[str, Any]]:
        states = {type(h).__name__: h.state_dict() for h in self._hooks}
        return {name: state for name, state in states.items() if state}

    def load_hook_states(self, states: dict[str, dict[str, Any]]) -> None:
        for hook in self._hooks:
            if type(hook).__name__ in states:
                hook.load_state_dict(states[type(hook).__name__])


class SimpleTrainer(TrainerBase):
    """One optimizer step per iteration on a batch from an infinite data loader.

    Args:
        model: returns a dict of scalar losses in training mode.
        data_loader: an iterable of batches (``list[dict]``) that never ends.
        optimizer: any torch optimizer.
        grad_clipper: called with the parameters before each optimizer step, or ``None``.
        amp_dtype: ``torch.float16``/``torch.bfloat16`` to train under autocast, or ``None``.
            float16 uses a gradient scaler (CUDA only).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[list[dict]],
        optimizer: torch.optim.Optimizer,
        *,
        grad_clipper: Callable[[Iterable[torch.Tensor]], Any] | None = None,
        amp_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.model = model
        self.data_loader = data_loader
        self._data_iter: Iterator[list[dict]] | None = None
        self.optimizer = optimizer
        self.grad_clipper = grad_clipper
        self.amp_dtype = amp_dtype
        device_type = next(model.parameters()).device.type
        if amp_dtype == torch.float16 and device_type != "cuda":
            raise ConfigError(
                "SOLVER.AMP.DTYPE float16 needs a CUDA GPU; fix: SOLVER.AMP.DTYPE bfloat16 on CPU, "
                "or SOLVER.AMP.ENABLED False"
            )
        self.device_type = device_type
        self.grad_scaler = (
            torch.amp.GradScaler(device_type) if amp_dtype == torch.float16 else None
        )

    @property
    def data_iter(self) -> Iterator[list[dict]]:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        return self._data_iter

    def run_step(self) -> None:
        self.model.train()
        start = time.perf_counter()
        data = next(self.data_iter)
        data_time = time.perf_counter() - start

        autocast = (
            torch.autocast(self.device_type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with autocast:
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        # One host sync for all terms (not one .item() per term), averaged over the processes
        # of a DDP job so that the log shows the loss of the whole batch, and so that every
        # process sees the same values and stops together on a non-finite one.
        values = _mean_over_processes(torch.stack([v.detach().float() for v in loss_dict.values()]))
        loss_values = dict(zip(loss_dict, values.tolist()))
        check_finite_losses(loss_values, self.iter)

        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            losses.backward()
        if self.grad_clipper is not None:
            self.grad_clipper(p for p in self.model.parameters() if p.grad is not None)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

        self.storage.put_scalars(
            total_loss=sum(loss_values.values()), data_time=data_time, **loss_values
        )


def _mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over the processes of a DDP job (itself in a single process)."""
    if comm.get_world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / comm.get_world_size()


def check_finite_losses(loss_values: dict[str, float], iteration: int) -> None:
    """Stop with a message naming the iteration and every non-finite loss term."""
    bad = {k: v for k, v in loss_values.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise ConfigError(
            f"loss became non-finite at iteration {iteration + 1} ({terms}); no checkpoint was "
            f"written for it; fix: lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, or "
            f"check the annotations (empty or degenerate boxes)"
        )
