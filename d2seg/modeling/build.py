"""``build_model(cfg)``: the config's META_ARCHITECTURE, built and moved to MODEL.DEVICE."""

from typing import Any

import torch
from fvcore.common.registry import Registry
from torch import nn

from d2seg.config import CfgNode, get_key, validate_cfg
from d2seg.errors import ConfigError
from d2seg.modeling.registry import META_ARCH_REGISTRY


def build_from_registry(registry: Registry, key: str, cfg: CfgNode, *args: Any) -> Any:
    """Build the entry named by config ``key`` from ``registry``.

    A class is built as ``cls(**cls.from_config(cfg, *args))`` (keyword-only constructors, so
    every component is also usable without a config); a function is called as ``fn(cfg, *args)``.
    """
    name = get_key(cfg, key)
    try:
        entry = registry.get(name)
    except KeyError:
        known = ", ".join(sorted(k for k, _ in registry))
        raise ConfigError(f"{key} = {name!r} is not registered; fix: use one of {known}") from None
    if isinstance(entry, type):
        return entry(**entry.from_config(cfg, *args))
    return entry(cfg, *args)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; ``"cuda"`` needs a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"MODEL.DEVICE = {name!r} but no CUDA GPU is visible; fix: MODEL.DEVICE cpu (or auto)"
        )
    return torch.device(name)


def _check_class_counts_resolved(cfg: CfgNode) -> None:
    """A class count of 0 ("from the data") must have been resolved before building."""
    try:
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError:
        return  # build_from_registry names the fix
    counts = getattr(arch, "class_counts", None)
    for key in counts(cfg, {}) if counts else ():
        if get_key(cfg, key) == 0:
            raise ConfigError(
                f"{key} is 0, which means 'from DATASETS.TRAIN', but nothing resolved it; fix: "
                f"set it to the number of classes, or call "
                f"d2seg.engine.run_metadata.resolve_from_data(cfg) first (train_net.py does)"
            )


def build_model(cfg: CfgNode, *, device: str | None = None) -> nn.Module:
    """Validate ``cfg``, build ``MODEL.META_ARCHITECTURE`` and move it to ``device`` (default
    ``MODEL.DEVICE``). ``device="meta"`` builds the architecture without allocating or
    initialising any weight (a tenth of a second for a ResNet-50): for looking at its layers."""
    import d2seg.modeling.meta_arch  # noqa: F401  (registers the meta-architectures)

    validate_cfg(cfg)
    _check_class_counts_resolved(cfg)
    if device == "meta":
        with torch.device("meta"):
            return build_from_registry(META_ARCH_REGISTRY, "MODEL.META_ARCHITECTURE", cfg)
    model = build_from_registry(META_ARCH_REGISTRY, "MODEL.META_ARCHITECTURE", cfg)
    return model.to(resolve_device(device or cfg.MODEL.DEVICE))
