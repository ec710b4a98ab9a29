"""Config node with Detectron2's YAML habits and errors a user can act on.

Built on fvcore's ``CfgNode`` (the class Detectron2's own config extends). What d2seg adds:

* ``_BASE_`` may be one path or a list of paths, each relative to the file that names it; bases
  merge in order, then the child file on top.
* An unknown key fails with the key, the file (or "command line") and the closest valid keys.
* A string where a tuple/list is expected (``DATASETS.TRAIN: "x"``) fails with "add a trailing
  comma"; an int where a float is expected is accepted (yacs would refuse ``BASE_LR: 1``).
* Enumerated string values are checked by :func:`validate_cfg`.
"""

import difflib
import os
from ast import literal_eval
from typing import Any, Iterable

import yaml
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from d2seg.config.unsupported import check_supported
from d2seg.errors import ConfigError

BASE_KEY = "_BASE_"

# Enumerated values: key -> allowed values. Registry names (META_ARCHITECTURE, head NAMEs) are
# checked by the registries when the model is built.
CHOICES: dict[str, tuple[Any, ...]] = {
    "MODEL.DEVICE": ("auto", "cpu", "cuda"),
    "MODEL.RESNETS.DEPTH": (18, 34, 50, 101, 152),
    "MODEL.RESNETS.NORM": ("FrozenBN", "BN", "SyncBN", "GN"),
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": ("smooth_l1", "giou"),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": ("smooth_l1", "giou"),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": ("ROIAlignV2", "ROIAlign", "ROIPool", "ROIAlignRotated"),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": (
        "ROIAlignV2", "ROIAlign", "", "ROIPool", "ROIAlignRotated"
    ),
    "MODEL.ROI_BOX_HEAD.NORM": ("", "GN", "BN", "SyncBN", "FrozenBN"),
    "MODEL.ROI_MASK_HEAD.NORM": ("", "GN", "BN", "SyncBN", "FrozenBN"),
    "MODEL.SEM_SEG_HEAD.LOSS": ("ce", "bce", "dice", "ce+dice"),
    "MODEL.SEM_SEG_HEAD.NORM": ("BN", "GN", ""),
    "MODEL.SEM_SEG_HEAD.UPSAMPLE": ("bilinear", "nearest"),
    "INPUT.FORMAT": ("BGR", "RGB", "L", "N"),
    "INPUT.MASK_FORMAT": ("polygon", "bitmask"),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": ("choice", "range"),
    "INPUT.RANDOM_FLIP": ("horizontal", "vertical", "none"),
    "INPUT.CROP.TYPE": ("relative_range", "relative", "absolute", "absolute_range"),
    "DATALOADER.SAMPLER_TRAIN": ("TrainingSampler", "RepeatFactorTrainingSampler"),
    "SOLVER.OPTIMIZER": ("SGD", "AdamW"),
    "SOLVER.LR_SCHEDULER_NAME": ("WarmupMultiStepLR", "WarmupCosineLR"),
    "SOLVER.WARMUP_METHOD": ("linear", "constant"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("value", "norm"),
    "SOLVER.AMP.DTYPE": ("float16", "bfloat16"),
    "SOLVER.EARLY_STOP.MODE": ("max", "min"),
    "TEST.COCO_BACKEND": ("pycocotools", "faster"),
}


class CfgNode(_FvcoreCfgNode):
    """A config tree whose merges check every key and value against the defaults."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (and its ``_BASE_`` chain) into this config."""
        loaded = load_yaml_with_base(cfg_filename)
        _merge_checked(self, loaded, source=str(cfg_filename))

    def merge_from_other_cfg(self, cfg_other: "CfgNode") -> None:
        _merge_checked(self, dict(cfg_other), source="another config")

    def merge_from_list(self, cfg_list: list[Any], source: str = "command line") -> None:
        """Merge ``KEY VALUE`` pairs from the command line; values are Python literals (or
        already values, e.g. a search space's samples). ``source`` names them in errors."""
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"{source}: overrides must be KEY VALUE pairs, got an odd number of items "
                f"{list(cfg_list)}; fix: give a value after every key"
            )
        for full_key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
            nested: dict[str, Any] = {}
            node = nested
            parts = full_key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = raw
            _merge_checked(self, nested, source=source)

    def all_keys(self, prefix: str = "") -> list[str]:
        """Every leaf key of the tree as a dotted name, e.g. ``MODEL.ROI_HEADS.NUM_CLASSES``."""
        keys = []
        for k, v in self.items():
            name = f"{prefix}{k}"
            if isinstance(v, CfgNode):
                keys.extend(v.all_keys(prefix=f"{name}."))
            else:
                keys.append(name)
        return keys


def load_yaml_with_base(filename: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a YAML config, resolving ``_BASE_`` (a path or list of paths, relative to it)."""
    path = os.path.abspath(filename)
    if path in _seen:
        raise ConfigError(f"{filename}: _BASE_ chain loops back to itself; fix: remove the cycle")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {filename} does not exist; fix: check the path")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{filename}{line}: invalid YAML ({getattr(e, 'problem', e)})") from e
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{filename}: a config file must be a mapping of KEY: value")

    bases = cfg.pop(BASE_KEY, None)
    if bases is None:
        return cfg
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        _merge_dicts(merged, load_yaml_with_base(base_path, _seen + (path,)))
    _merge_dicts(merged, cfg)
    return merged


def validate_cfg(cfg: CfgNode) -> None:
    """Check enumerated values, Detectron2 features d2seg lacks (:mod:`~d2seg.config.unsupported`)
    and cross-key rules; raise :class:`ConfigError` on the first."""
    from d2seg.config.defaults import _C

    check_supported(cfg, _C)
    for key, allowed in CHOICES.items():
        value = get_key(cfg, key)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{key} = {value!r} is not one of {list(allowed)}; {hint}fix: use an allowed value"
            )
    channels = len(cfg.MODEL.PIXEL_MEAN)
    if len(cfg.MODEL.PIXEL_STD) != channels:
        raise ConfigError(
            f"MODEL.PIXEL_MEAN has {channels} values but MODEL.PIXEL_STD has "
            f"{len(cfg.MODEL.PIXEL_STD)}; fix: give one mean and one std per input channel"
        )
    expected = {"BGR": 3, "RGB": 3, "L": 1}.get(cfg.INPUT.FORMAT)
    if expected is not None and channels != expected:
        raise ConfigError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT!r} has {expected} channel(s) but MODEL.PIXEL_MEAN has "
            f"{channels} values; fix: set MODEL.PIXEL_MEAN/PIXEL_STD to {expected} values"
        )


def _merge_checked(
    node: CfgNode, other: dict[str, Any], source: str, prefix: str = "", root: CfgNode | None = None
) -> None:
    """Merge ``other`` into ``node``, refusing unknown keys and values of the wrong type.
    ``root`` is the whole tree, whose keys an unknown key is compared with."""
    root = node if root is None else root
    for key, value in other.items():
        full = f"{prefix}{key}"
        if key == BASE_KEY:
            raise ConfigError(f"{source}: {full} is only allowed at the top level of a file")
        if key not in node:
            hint = _suggest(full, root.all_keys())
            raise ConfigError(f"{source}: unknown config key {full}; {hint}")
        current = node[key]
        if isinstance(current, CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{source}: {full} is a group of keys, got {value!r}; fix: set one of its "
                    f"keys, e.g. {full}.{next(iter(current))}"
                )
            _merge_checked(current, value, source, prefix=f"{full}.", root=root)
        else:
            node[key] = _coerce(current, value, full, source)


def _coerce(default: Any, value: Any, key: str, source: str) -> Any:
    if isinstance(value, str) and not isinstance(default, str):
        # As yacs does: YAML has no tuples, so Detectron2 configs write `STEPS: (210000, 250000)`.
        value = _parse_literal(value)
    if default is None or value is None:
        return value
    if isinstance(default, (tuple, list)):
        if isinstance(value, str):
            raise ConfigError(
                f"{source}: {key} expects a tuple/list, got the string {value!r}; fix: add a "
                f"trailing comma: ({value!r},) in YAML, or \"('{value}',)\" on the command line"
            )
        if isinstance(value, (tuple, list)):
            inner = default[0] if default else None
            if isinstance(inner, (tuple, list)):  # e.g. one weight tuple per cascade stage
                value = [type(inner)(v) if isinstance(v, (tuple, list)) else v for v in value]
            return type(default)(value)
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"{source}: {key} expects a {type(default).__name__}, got "
        f"{value!r} ({type(value).__name__}); fix: give a value of that type"
    )


def _suggest(full_key: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    leaf = full_key.rsplit(".", 1)[-1]
    same_leaf = [k for k in valid if k.rsplit(".", 1)[-1] == leaf]
    candidates = sorted(
        same_leaf, key=lambda k: -difflib.SequenceMatcher(None, full_key, k).ratio()
    ) or difflib.get_close_matches(full_key, valid, n=3, cutoff=0.5)
    if not candidates:
        return "fix: remove it, or see d2seg/config/defaults.py for valid keys"
    first, *others = candidates[:3]
    also = f" (or {', '.join(others)})" if others else ""
    return f"did you mean {first}{also}?"


def _parse_literal(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _merge_dicts(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge_dicts(dst[k], v)
        else:
            dst[k] = v


def get_key(cfg: CfgNode, dotted: str) -> Any:
    """The value of a dotted key, e.g. ``get_key(cfg, "MODEL.ROI_HEADS.NUM_CLASSES")``."""
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def set_key(cfg: CfgNode, dotted: str, value: Any) -> None:
    """Set a dotted key of an unfrozen ``cfg`` (no type check: the caller's value is trusted)."""
    path, _, leaf = dotted.rpartition(".")
    node = get_key(cfg, path) if path else cfg
    node[leaf] = value
