"""Dataset and metadata catalogs with Detectron2's API.

``DatasetCatalog.register(name, func)`` maps a name to a function returning dataset dicts;
``MetadataCatalog.get(name)`` holds what is known about it (class names, json file, ignore
label). The standard loaders and their ``register_*`` helpers are in :mod:`d2seg.data.datasets`.
"""

from collections import UserDict
from typing import Any, Callable

from d2seg.errors import DatasetError


class _DatasetCatalog(UserDict):
    """Name → function returning ``list[dict]`` (the dataset dicts); call ``get`` to load."""

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        if not callable(func):
            raise DatasetError(
                f"DatasetCatalog.register('{name}', ...): {func!r} is not callable; fix: pass a "
                f"function that returns the dataset dicts"
            )
        if name in self:
            raise DatasetError(
                f"dataset '{name}' is already registered; fix: pick another name or call "
                f"DatasetCatalog.remove('{name}') first"
            )
        self[name] = func

    def get(self, name: str) -> list[dict]:
        """Call the function registered as ``name`` and return its dataset dicts."""
        try:
            func = self[name]
        except KeyError:
            registered = ", ".join(sorted(self)) or "none"
            raise DatasetError(
                f"dataset '{name}' is not registered (registered: {registered}); fix: register "
                f"it (register_coco_instances) or give a path to a COCO json file instead"
            ) from None
        return func()

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.keys())})"


DatasetCatalog = _DatasetCatalog()


class Metadata:
    """Attributes of one dataset (``thing_classes``, ``json_file``, ``ignore_label``, ...).

    Set once: setting an attribute to a different value than it has is an error, because two
    parts of a program disagreeing about a dataset's classes is a bug that must not pass.
    """

    def __init__(self, name: str):
        self.__dict__["name"] = name

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"metadata of dataset '{self.__dict__['name']}' has no '{key}' (it has: "
            f"{', '.join(self.__dict__)}); fix: MetadataCatalog.get(name).set({key}=...)"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        old = self.__dict__.get(key, value)
        if old != value:
            raise DatasetError(
                f"metadata '{key}' of dataset '{self.name}' is already {old!r} and cannot become "
                f"{value!r}; fix: register the dataset under another name, or "
                f"MetadataCatalog.remove('{self.name}') first"
            )
        self.__dict__[key] = value

    def set(self, **kwargs: Any) -> "Metadata":
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class _MetadataCatalog(UserDict):
    """Name → :class:`Metadata`; ``get`` creates an empty one on first use (as Detectron2)."""

    def get(self, name: str) -> Metadata:
        if name not in self:
            self[name] = Metadata(name)
        return self[name]

    def list(self) -> list[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


MetadataCatalog = _MetadataCatalog()
