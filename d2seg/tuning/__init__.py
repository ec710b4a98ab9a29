"""Hyper-parameter search with Optuna over d2seg configs (``tools/tune.py``): a YAML search
space keyed by config keys (:mod:`~d2seg.tuning.space`), checked before anything runs
(:mod:`~d2seg.tuning.job`); trials that are ordinary training runs reporting each evaluation
to the pruner (:mod:`~d2seg.tuning.reporter`, :mod:`~d2seg.tuning.trial`); workers sharing a
study through its storage (:mod:`~d2seg.tuning.worker`, :mod:`~d2seg.tuning.launch`,
:mod:`~d2seg.tuning.storage`, :mod:`~d2seg.tuning.study`); and the study's outputs
(:mod:`~d2seg.tuning.outputs`). Needs the ``[tune]`` extra (optuna)."""
