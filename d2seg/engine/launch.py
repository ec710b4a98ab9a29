"""Start one process per device, or join the process group that torchrun made.

``--num-gpus N`` starts N processes on this machine: NCCL when CUDA is available, gloo on CPU
(so DDP can be exercised without a GPU). Under ``torchrun`` (``LOCAL_RANK`` is set) nothing is
spawned: the process joins the group torchrun describes in its environment variables.

The spawned workers run in their own process group, and this process forwards each SIGINT and
SIGTERM it gets to every worker once (a terminal's Ctrl-C would otherwise reach them directly
as well, and count twice); it then waits for them to save and stop, and exits as they do.
"""

import contextlib
import logging
import os
import signal
import socket
import sys
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2seg.errors import ConfigError, D2SegError
from d2seg.utils.cli import INTERRUPT_EXIT_CODES, USER_ERROR_EXIT_CODE, Interrupted

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: tuple = (),
) -> None:
    """Run ``main_func(*args)`` in every process of the job."""
    if under_torchrun():
        _run_under_torchrun(main_func, args)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and torch.cuda.device_count() < num_gpus_per_machine:
        raise ConfigError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPU(s) are "
            f"visible; fix: lower --num-gpus"
        )
    if dist_url == "auto":
        if num_machines != 1:
            raise ConfigError(
                "--dist-url auto works on one machine only; fix: pass --dist-url tcp://HOST:PORT "
                "of machine 0"
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    # Workers send a user error (or an Interrupted) back here: whichever process fails first,
    # the parent raises it once (run_cli prints one line), and no rank's message is lost when
    # the others are terminated.
    user_errors = mp.get_context("spawn").SimpleQueue()
    # When one worker fails, torch terminates the others and logs a warning per process; the
    # worker's own error (one line for a user mistake, a traceback otherwise) says it all.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    context = mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(
            main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
            user_errors,
        ),
        daemon=False,
        start_method="spawn",
        join=False,
    )
    try:
        with _signals_forwarded_to(context.processes):
            while not context.join():
                pass
    except mp.ProcessExitedException as e:
        if e.exit_code == USER_ERROR_EXIT_CODE or e.exit_code in INTERRUPT_EXIT_CODES:
            if not user_errors.empty():
                raise user_errors.get() from None
            if e.exit_code == 128 + signal.SIGINT:
                raise KeyboardInterrupt from None  # a second Ctrl-C: aborted, nothing saved
            raise SystemExit(e.exit_code) from None
        raise


@contextlib.contextmanager
def _signals_forwarded_to(processes: list[Any]):
    def forward(signum: int, frame: Any) -> None:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    user_errors: Any,
) -> None:
    os.setpgrp()  # signals come from the launcher, once each (see the module docstring)
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    os.environ["LOCAL_RANK"] = str(local_rank)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=_backend(),
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=DEFAULT_TIMEOUT,
    )
    try:
        dist.barrier()
        main_func(*args)
    except D2SegError as e:
        user_errors.put(e)
        sys.exit(USER_ERROR_EXIT_CODE)
    except Interrupted as e:
        user_errors.put(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # torch's worker wrapper would exit 0
        sys.exit(128 + signal.SIGINT)
    finally:
        dist.destroy_process_group()


def under_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its environment describes a group)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def torchrun_process_group():
    """Join the process group ``torchrun`` describes for the duration of the block (each
    process on its own GPU when CUDA is available; gloo on CPU)."""
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=_backend(), timeout=DEFAULT_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _run_under_torchrun(main_func: Callable[..., Any], args: tuple) -> None:
    with torchrun_process_group():
        main_func(*args)
