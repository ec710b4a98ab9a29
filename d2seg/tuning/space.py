"""A hyper-parameter search space in YAML, keyed by config keys, checked against the config.

Each entry names one config key and how to sample it::

    SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}
    MODEL.SEM_SEG_HEAD.DICE_WEIGHT: {uniform: [0.2, 2.0]}
    SOLVER.IMS_PER_BATCH: {int: [2, 16, log]}
    INPUT.MIN_SIZE_TRAIN: {int: [64, 128]}        # a list key gets a one-element list
    MODEL.SEM_SEG_HEAD.LOSS: {choice: [ce, dice, ce+dice]}

Every bound and choice is merged into the base config with the config's own checks (unknown
key with its closest match, wrong type, enumerated values) when the space is loaded, so a typo
fails before any trial runs.

Example::

    from d2seg.config import get_cfg
    from d2seg.tuning.space import SearchSpace

    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_R_18_tiny.yaml")
    space = SearchSpace.from_file("configs/tune/unet.yaml", cfg)
    print([d.key for d in space.dimensions])
"""

import math
import os
from dataclasses import dataclass
from typing import Any

import optuna
import yaml

from d2seg.config import CfgNode, get_key, validate_cfg
from d2seg.errors import ConfigError

KINDS = ("loguniform", "uniform", "int", "choice")
_EXAMPLE = "e.g. SOLVER.BASE_LR: {loguniform: [1.0e-4, 1.0e-2]}"


@dataclass(frozen=True)
class Dimension:
    """One searched config key: ``kind`` in :data:`KINDS`; ``low``/``high`` for ranges,
    ``log`` for log-scaled ints, ``choices`` for ``choice``; ``as_list``: the config value
    is a list and a sampled number is set as a one-element list."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    as_list: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value for this key, in the config's type."""
        if self.kind == "choice":
            # Optuna stores only None/bool/int/float/str choices: lists go by their repr.
            labels = [_label(c) for c in self.choices]
            return self.choices[labels.index(trial.suggest_categorical(self.key, labels))]
        if self.kind == "int":
            value: Any = trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        else:
            value = trial.suggest_float(
                self.key, self.low, self.high, log=self.kind == "loguniform"
            )
        return (value,) if self.as_list else value

    def config_value(self, optuna_value: Any) -> Any:
        """The config value of a parameter as Optuna recorded it (``best_params``)."""
        if self.kind == "choice":
            return self.choices[[_label(c) for c in self.choices].index(optuna_value)]
        return (optuna_value,) if self.as_list else optuna_value

    def describe(self) -> dict[str, Any]:
        """The YAML form, e.g. ``{"int": [2, 16, "log"]}``."""
        if self.kind == "choice":
            return {"choice": [list(c) if isinstance(c, tuple) else c for c in self.choices]}
        bounds: list[Any] = [self.low, self.high] + (["log"] if self.log else [])
        return {self.kind: bounds}


def _label(choice: Any) -> Any:
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    return repr(list(choice) if isinstance(choice, tuple) else choice)


class SearchSpace:
    """The dimensions of a search, each checked against a base config."""

    def __init__(self, dimensions: list[Dimension], source: str = "search space"):
        """``source`` names the space in the error for an empty one."""
        if not dimensions:
            raise ConfigError(
                f"{source}: the search space is empty; fix: add at least one KEY: "
                f"{{kind: [...]}} entry, {_EXAMPLE}"
            )
        self.dimensions = dimensions

    @classmethod
    def from_file(cls, path: str | os.PathLike, cfg: CfgNode) -> "SearchSpace":
        """Load ``path`` and check every entry against ``cfg`` (the base config)."""
        source = str(path)
        if not os.path.isfile(path):
            raise ConfigError(f"--space {source} does not exist; fix: check the path")
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(
                f"{source}{line}: not valid YAML ({getattr(e, 'problem', e)}); fix: write one "
                f"KEY: {{kind: [...]}} per line, {_EXAMPLE}"
            ) from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{source}: a search space is a mapping of config keys, got "
                f"{type(raw).__name__}; fix: write one KEY: {{kind: [...]}} per line, {_EXAMPLE}"
            )
        return cls.from_dict(raw, cfg, source)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], cfg: CfgNode, source: str = "search space"
                  ) -> "SearchSpace":
        """Parse ``{key: {kind: [...]}}`` and check each entry against ``cfg``."""
        return cls([_parse(str(key), spec, cfg, source) for key, spec in raw.items()], source)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """``{config key: value}`` for one trial."""
        return {d.key: d.suggest(trial) for d in self.dimensions}

    def config_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """``{config key: value}`` of Optuna's recorded ``params`` (e.g. the best trial's)."""
        return {d.key: d.config_value(params[d.key]) for d in self.dimensions if d.key in params}

    def describe(self) -> dict[str, Any]:
        """The space in its YAML form (stored with the study to recognise a rerun)."""
        return {d.key: d.describe() for d in self.dimensions}


def apply_values(cfg: CfgNode, values: dict[str, Any], source: str) -> CfgNode:
    """A copy of ``cfg`` with ``values`` merged through the config's checks and
    :func:`validate_cfg`."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.merge_from_list([item for kv in values.items() for item in kv], source=source)
    validate_cfg(cfg)
    return cfg


def _parse(key: str, spec: Any, cfg: CfgNode, source: str) -> Dimension:
    where = f"{source}: {key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(
            f"{where}: expected one of {{{', '.join(f'{k}: [...]' for k in KINDS)}}}, got "
            f"{spec!r}; fix: {_EXAMPLE}"
        )
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {kind} takes a list, got {args!r}; fix: {_EXAMPLE}")
    if kind in ("uniform", "loguniform"):
        args = [_yaml11_float(a) for a in args]
    if key not in cfg.all_keys():
        # The config's merge raises its unknown-key (or key-group) error with the closest keys.
        apply_values(cfg, {key: None}, source)
    default = get_key(cfg, key)
    as_list = isinstance(default, (tuple, list)) and kind != "choice"
    if kind == "choice":
        choices = tuple(tuple(c) if isinstance(c, list) else c for c in args)
        _check_values(cfg, key, list(choices), source)
        return Dimension(key, kind, choices=choices)
    log = kind == "loguniform"
    if kind == "int":
        log = len(args) == 3 and args[2] == "log"
        if len(args) not in (2, 3) or (len(args) == 3 and not log) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in args[:2]
        ):
            raise ConfigError(
                f"{where}: int takes [low, high] or [low, high, log] with whole numbers, got "
                f"{args!r}; fix: e.g. {{int: [2, 16, log]}}"
            )
    elif len(args) != 2 or not all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
        for a in args
    ):
        raise ConfigError(
            f"{where}: {kind} takes [low, high] numbers, got {args!r}; fix: {_EXAMPLE}"
        )
    low, high = args[0], args[1]
    if not low < high:
        raise ConfigError(f"{where}: low {low} must be below high {high}; fix: swap or widen them")
    if log and low <= 0:
        raise ConfigError(
            f"{where}: a log scale needs low > 0, got {low}; fix: use a positive low bound or "
            f"{'uniform' if kind == 'loguniform' else 'int without log'}"
        )
    cast = int if kind == "int" else float
    bounds = [(cast(b),) if as_list else cast(b) for b in (low, high)]
    _check_values(cfg, key, bounds, source)
    return Dimension(key, kind, low=low, high=high, log=log, as_list=as_list)


def _yaml11_float(value: Any) -> Any:
    """``1e-4`` as a number: PyYAML follows YAML 1.1, which reads exponents without a dot
    (``1e-4``, unlike ``1.0e-4``) as strings."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _check_values(cfg: CfgNode, key: str, values: list[Any], source: str) -> None:
    """Each value merged into a copy of ``cfg`` alone, with the config's own checks."""
    for value in values:
        apply_values(cfg, {key: value}, source)
