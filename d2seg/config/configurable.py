"""``@configurable``: construct from a config or from explicit arguments, as in Detectron2.

A class whose ``__init__`` is decorated (and which has a ``from_config(cls, cfg, ...)``
classmethod returning the ``__init__`` keyword arguments), or a function decorated with
``@configurable(from_config=func)``, can be called either way::

    DatasetMapper(cfg, is_train=False)                          # from a config
    DatasetMapper(**DatasetMapper.from_config(cfg, is_train=False))  # the same, spelled out
    DatasetMapper(is_train=False, augmentations=..., image_format="RGB")

A call is "with a config" when its first positional argument (or its ``cfg`` keyword) is a
``CfgNode``: then ``from_config(cfg, *args, **kwargs)`` gives the keyword arguments, and
keyword arguments ``from_config`` does not take are passed on to the constructor or function
unchanged (over what ``from_config`` returned, if it returned the same name).
"""

import functools
import inspect
from typing import Any, Callable

from fvcore.common.config import CfgNode


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    if args and isinstance(args[0], CfgNode):
        return True
    return isinstance(kwargs.get("cfg"), CfgNode)


def _args_from_config(from_config: Callable, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``from_config(*args, **supported kwargs)`` plus the kwargs it does not accept."""
    parameters = inspect.signature(from_config).parameters
    if next(iter(parameters), None) != "cfg":
        raise TypeError(f"{from_config.__qualname__} must take 'cfg' as its first argument")
    takes_any = any(
        p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in parameters.values()
    )
    if takes_any:
        return from_config(*args, **kwargs)
    extra = {name: kwargs.pop(name) for name in list(kwargs) if name not in parameters}
    explicit = from_config(*args, **kwargs)
    explicit.update(extra)
    return explicit


def configurable(init_func: Callable | None = None, *, from_config: Callable | None = None):
    """Decorate a class's ``__init__`` (``@configurable``) or a function
    (``@configurable(from_config=func)``) to accept a config as in Detectron2 (see the module
    docstring)."""
    if init_func is not None:
        if from_config is not None or init_func.__name__ != "__init__":
            raise TypeError("@configurable without arguments decorates a class's __init__")

        @functools.wraps(init_func)
        def wrapped_init(self, *args: Any, **kwargs: Any) -> None:
            class_from_config = getattr(type(self), "from_config", None)
            if not inspect.ismethod(class_from_config):
                raise TypeError(
                    f"{type(self).__name__} uses @configurable and needs a from_config classmethod"
                )
            if _called_with_cfg(*args, **kwargs):
                init_func(self, **_args_from_config(class_from_config, *args, **kwargs))
            else:
                init_func(self, *args, **kwargs)

        return wrapped_init

    if from_config is None:
        return configurable  # @configurable() on an __init__
    if not inspect.isfunction(from_config):
        raise TypeError("@configurable(from_config=...) needs a function")

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if _called_with_cfg(*args, **kwargs):
                return func(**_args_from_config(from_config, *args, **kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config
        return wrapped

    return decorator
