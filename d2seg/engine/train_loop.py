"""The training loop and its hook protocol (Detectron2's TrainerBase / SimpleTrainer).

A trainer runs ``run_step`` from ``start_iter`` to ``max_iter``; hooks are called before and
after training and around every step, in the order they were registered. A hook may end training
early by raising :class:`StopTraining` (early stopping).

SIGINT (Ctrl-C) and SIGTERM (a preempted job) during training ask to stop: the current step and
its hooks finish, every process of a DDP job agrees to stop after that same step, the hooks'
``on_interrupt`` save a checkpoint, and ``train`` raises :class:`~d2seg.utils.cli.Interrupted`
(exit 130/143 from a command-line tool). A second SIGINT aborts at once, without saving.
"""

import logging
import math
import os
import signal
import threading
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
from d2seg.utils.cli import Interrupted
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

    def on_interrupt(self) -> str | None:
        """Called on every process after the step at which a SIGINT/SIGTERM stop was agreed
        (after its ``after_step``, before ``after_train``); returns the path of the checkpoint
        it wrote, if it wrote one."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints so that ``--resume`` restores the hook."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class _StopRequest:
    """SIGINT/SIGTERM handlers of the main thread while training runs: the first signal asks
    to stop after the current step (``signum``); the second SIGINT raises KeyboardInterrupt
    (abort); a repeated SIGTERM only repeats the request (a scheduler may send it to every
    process and the launcher forward it as well)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self._sigints = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self.signum = self._sigints = 0
        if threading.current_thread() is threading.main_thread():  # else Python refuses
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def restore(self, pending: bool) -> None:
        """Put the previous handlers back. A request the loop did not act on (``pending``: it
        ended by an exception, e.g. a pruner's, or StopTraining after the signal came) is passed
        on to them, so a SIGTERM during a step that a hook ends still stops the process."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if pending and self.signum:
            signal.raise_signal(self.signum)

    def flags(self) -> torch.Tensor:
        """float32 ``[SIGINT requested, SIGTERM requested]`` of this process."""
        return torch.tensor(
            [self.signum == signal.SIGINT, self.signum == signal.SIGTERM], dtype=torch.float32
        )

    @staticmethod
    def decide(flags: torch.Tensor) -> int:
        """The signal to stop on from :meth:`flags` summed or averaged over processes (0: none);
        SIGTERM wins, since the job is then going away anyway."""
        if flags[1] > 0:
            return signal.SIGTERM
        return signal.SIGINT if flags[0] > 0 else 0

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1:
                raise KeyboardInterrupt
        if self.signum:
            return
        self.signum = signum
        # os.write, not logging or print: a handler may interrupt a write to the same stream.
        again = "; Ctrl-C again to abort without saving" if signum == signal.SIGINT else ""
        os.write(2, f"{signal.Signals(signum).name}: stopping after this iteration and saving "
                    f"a checkpoint{again}\n".encode())


class TrainerBase(ABC):
    """Runs hooks around ``run_step`` for iterations ``[start_iter, max_iter)``.

    ``train_seconds``: wall seconds of the last :meth:`train`, from its first hook to its last
    (steps, evaluations, checkpoints, writers), also when it stopped by an exception; what a
    user calls the training time, without building the model and data beforehand."""

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.completed = False
        self.storage = EventStorage()
        self.train_seconds = 0.0
        self._stop = _StopRequest()

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = weakref.proxy(self)
            self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``[start_iter, max_iter)``; raises :class:`Interrupted` after a
        SIGINT/SIGTERM stop (see the module docstring)."""
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.storage = EventStorage(start_iter)
        self.completed = False
        interrupted: Interrupted | None = None
        started = time.perf_counter()
        self._stop.install()
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
                signum = self.agreed_stop()
                if signum:
                    interrupted = self._save_for_interrupt(signum)
                    break
            else:
                self.completed = True
        except StopTraining as stop:
            logger.info(f"Training stopped at iteration {self.iter + 1}: {stop}")
            self.completed = True
        finally:
            # Also after a failure, so writers flush what was logged before it; hooks that
            # should act only on success (final eval, final checkpoint) check self.completed.
            try:
                for hook in self._hooks:
                    hook.after_train()
            finally:
                self._stop.restore(pending=interrupted is None)
                self.train_seconds = time.perf_counter() - started
        if interrupted is not None:
            comm.synchronize()  # the processes exit together, once rank 0 has written its files
            raise interrupted

    def agreed_stop(self) -> int:
        """The signal every process agreed to stop on after this step (0: go on). A collective
        with several processes: one all_reduce of two numbers (SimpleTrainer instead adds them
        to the all_reduce of its losses)."""
        flags = self._stop.flags()
        if comm.get_world_size() > 1:
            dist.all_reduce(flags)
        return self._stop.decide(flags)

    def _save_for_interrupt(self, signum: int) -> Interrupted:
        saved = [path for hook in self._hooks if (path := hook.on_interrupt())]
        where = f"saved {', '.join(saved)}" if saved else "no checkpoint hook, nothing saved"
        return Interrupted(
            signum,
            f"{signal.Signals(signum).name}: stopped after iteration {self.iter + 1}/"
            f"{self.max_iter}; {where}",
        )

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
        self._agreed_signum = 0

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
        # process sees the same values and stops together on a non-finite one; the stop
        # requests (SIGINT/SIGTERM) ride along, so agreeing on them costs no extra collective.
        terms = torch.stack([v.detach().float() for v in loss_dict.values()])
        flags = self._stop.flags().to(terms.device)
        values = _mean_over_processes(torch.cat([terms, flags])).tolist()
        loss_values = dict(zip(loss_dict, values))
        self._agreed_signum = self._stop.decide(torch.tensor(values[len(loss_dict):]))
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

    def agreed_stop(self) -> int:
        return self._agreed_signum


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
