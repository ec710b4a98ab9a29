"""Create or continue the Optuna study of a :class:`~d2seg.tuning.job.TuneJob`.

A study is named (``--study-name``) inside its storage and remembers what it searches
(:meth:`TuneJob.signature`): rerunning the same command continues it, and a rerun with another
config, space or metric under the same name is refused instead of mixing two searches.

Example::

    study = open_study(job, open_storage(url), name="tune", pruner=PrunerSpec("median"), seed=0)
"""

import warnings

import numpy as np
import optuna
from optuna.storages import BaseStorage

from d2seg.errors import ConfigError
from d2seg.tuning.job import TuneJob
from d2seg.tuning.pruner import PrunerSpec

_SIGNATURE = "d2seg_search"


def open_study(job: TuneJob, storage: BaseStorage, *, name: str, pruner: PrunerSpec,
               seed: int, worker: int = 0) -> optuna.Study:
    """The study ``name`` in ``storage``, created when new. TPE sampling is seeded from
    (``seed``, ``worker``, trials already in the study): reproducible for a new study, and
    neither two workers nor a resumed run repeat the parameters another one sampled."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=job.direction,
            pruner=pruner.build(job.cfg),
            load_if_exists=True,
        )
        sequence = np.random.SeedSequence([seed, worker, len(study.trials)])
        study.sampler = optuna.samplers.TPESampler(seed=int(sequence.generate_state(1)[0]))
    signature = job.signature()
    stored = study.user_attrs.get(_SIGNATURE)
    if stored is None:
        study.set_user_attr(_SIGNATURE, signature)
    elif stored != signature:
        differ = [k for k in signature if stored.get(k) != signature[k]]
        raise ConfigError(
            f"study {name!r} in this storage searches something else ({', '.join(differ)} "
            f"differ{'s' if len(differ) == 1 else ''}); fix: rerun with the same config, "
            f"space, KEY VALUE opts and metric to continue it, or use a new --output / "
            f"--study-name"
        )
    return study
