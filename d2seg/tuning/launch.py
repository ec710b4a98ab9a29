"""``--workers N``: N local worker processes on one study, each on its own GPU when several
are visible (CPU threads split between them otherwise).

Each worker is a fresh ``spawn`` process (CUDA cannot be forked) that opens the storage by its
URL, samples with its own seed and runs :func:`d2seg.tuning.worker.work`; its console output
goes to ``OUTPUT/workers/worker_K.log``. The parent only watches the study.

Example::

    spec = StudySpec(url, "tune", PrunerSpec("median"), 0)
    codes = run_workers(job, spec, workers=2, n_trials=16, keep_best=1, on_poll=lambda: None)
"""

import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from d2seg.tuning.job import TuneJob
from d2seg.tuning.pruner import PrunerSpec
from d2seg.utils.cli import Interrupted

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class StudySpec:
    """How a process opens the shared study."""

    storage_url: str
    name: str
    pruner: PrunerSpec
    seed: int


def run_workers(job: TuneJob, spec: StudySpec, *, workers: int, n_trials: int, keep_best: int,
                on_poll: Callable[[], None]) -> list[int]:
    """Start ``workers`` processes, call ``on_poll`` every second until all have ended;
    returns their exit codes (0 each when the study is done)."""
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // workers)
    log_dir = job.output / "workers"
    log_dir.mkdir(exist_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker_main,
            args=(job, spec, k, n_trials, keep_best, k % gpus if gpus > 1 else None, threads,
                  str(log_dir / f"worker_{k}.log")),
            name=f"tune-worker-{k}",
        )
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(p.is_alive() for p in processes):
            on_poll()
            time.sleep(POLL_SECONDS)
    finally:
        for process in processes:  # after Ctrl-C the workers stop on their own SIGINT
            process.join()
    on_poll()
    return [p.exitcode for p in processes]


def _worker_main(job: TuneJob, spec: StudySpec, index: int, n_trials: int, keep_best: int,
                 gpu: int | None, threads: int, log_path: str) -> None:
    with open(log_path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    if gpu is not None:  # before the first CUDA call of this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    torch.set_num_threads(threads)
    import optuna

    from d2seg.tuning.storage import open_storage
    from d2seg.tuning.study import open_study
    from d2seg.tuning.worker import retry_trial, work

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(spec.storage_url, on_stale=retry_trial)
    study = open_study(job, storage, name=spec.name, pruner=spec.pruner, seed=spec.seed,
                       worker=index)
    try:
        work(job, study, n_trials, keep_best=keep_best)
    except Interrupted as stop:  # Ctrl-C reaches every process of the terminal's group
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
