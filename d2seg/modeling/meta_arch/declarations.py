"""What a meta-architecture declares about itself, and how the rest of d2seg asks it.

Every class registered in ``META_ARCH_REGISTRY`` states, as class-level facts:

* ``tasks``: the outputs it is evaluated on, a tuple of :data:`TASKS` — ``"instances"``
  (COCO boxes/masks), ``"sem_seg"`` (per-pixel classes), ``"panoptic_seg"`` (PQ). The trainer
  picks evaluators from it, the mapper its panoptic targets, the exporter its graph.
* ``headline_metric(cfg) -> "task/metric"``: the key of the evaluation results that says how
  good the model is (early stopping, ``model_best.pth``, reports), e.g. ``"segm/AP"``.
* ``class_counts(cfg, metadata) -> {config key: count or None}``: the class-count keys it
  reads and the value each must have for a dataset with this metadata (``thing_classes``,
  ``stuff_classes``, ...; None where the metadata does not tell), so ``NUM_CLASSES 0`` can
  mean "as many as the data has".

Example::

    from d2seg.config import get_cfg
    from d2seg.modeling.meta_arch.declarations import meta_arch_class

    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    arch = meta_arch_class(cfg)
    assert arch.tasks == ("sem_seg",) and arch.headline_metric(cfg) == "sem_seg/mIoU"
"""

from d2seg.config import CfgNode
from d2seg.errors import ConfigError
from d2seg.modeling.registry import META_ARCH_REGISTRY

TASKS = ("instances", "sem_seg", "panoptic_seg")

_DECLARATION_FIX = (
    "declare on the class: tasks = ('sem_seg',) (any of {tasks}), "
    "@classmethod headline_metric(cls, cfg) -> 'sem_seg/mIoU' and "
    "@classmethod class_counts(cls, cfg, metadata) -> {{'MODEL.SEM_SEG_HEAD.NUM_CLASSES': n}}"
)


def meta_arch_class(cfg: CfgNode) -> type:
    """The class ``MODEL.META_ARCHITECTURE`` names, checked to declare what d2seg asks of it."""
    import d2seg.modeling.meta_arch  # noqa: F401  (registers the meta-architectures)

    name = cfg.MODEL.META_ARCHITECTURE
    try:
        arch = META_ARCH_REGISTRY.get(name)
    except KeyError:
        known = ", ".join(sorted(k for k, _ in META_ARCH_REGISTRY))
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE = {name!r} is not registered; fix: use one of {known}"
        ) from None
    tasks = getattr(arch, "tasks", None)
    declared = (
        isinstance(tasks, tuple)
        and tasks
        and set(tasks) <= set(TASKS)
        and callable(getattr(arch, "headline_metric", None))
        and callable(getattr(arch, "class_counts", None))
    )
    if not declared:
        raise ConfigError(
            f"meta-architecture {name} does not declare what it produces; fix: "
            + _DECLARATION_FIX.format(tasks=", ".join(TASKS))
        )
    return arch


def model_tasks(cfg: CfgNode) -> tuple[str, ...]:
    """The tasks of the config's meta-architecture, e.g. ``("instances", "panoptic_seg")``."""
    return meta_arch_class(cfg).tasks


def headline_metric(cfg: CfgNode) -> str:
    """The config's meta-architecture's headline metric key, e.g. ``"sem_seg/mIoU"``."""
    return meta_arch_class(cfg).headline_metric(cfg)
