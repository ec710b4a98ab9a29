"""Deterministic, seeded train/val/... splits of a list of items.

``--split val=0.2 test=0.1`` gives 20 % of the items to ``val``, 10 % to ``test`` and the rest to
``train``. The same items, fractions and seed always give the same split; sizes are exact (largest
remainder rounding), and a split asked for gets at least one item when there are enough items.
"""

import random
import re

from d2seg.errors import ConfigError

REST_SPLIT = "train"
NO_SPLIT = "all"
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")


def parse_split_args(args: list[str]) -> dict[str, float]:
    """``["val=0.2", "test=0.1"]`` → ``{"val": 0.2, "test": 0.1}``; raises ConfigError."""
    splits: dict[str, float] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        try:
            fraction = float(value) if sep else None
        except ValueError:
            fraction = None
        if fraction is None or not _SPLIT_NAME.fullmatch(name):
            raise ConfigError(
                f"--split {arg!r}: expected NAME=FRACTION; fix: e.g. --split val=0.2 test=0.1"
            )
        if name in splits:
            raise ConfigError(f"--split: '{name}' given twice; fix: give each split once")
        splits[name] = fraction
    return splits


def check_splits(splits: dict[str, float]) -> dict[str, float]:
    """All splits with their fractions, ``train`` holding the rest; raises ConfigError."""
    for name, fraction in splits.items():
        if not _SPLIT_NAME.fullmatch(name) or name == NO_SPLIT:
            raise ConfigError(
                f"split name {name!r} is not allowed; fix: use letters, digits, '_' or '-' "
                f"(and not '{NO_SPLIT}')"
            )
        if not 0 < fraction <= 1:
            raise ConfigError(
                f"split {name}={fraction}: a fraction must be in (0, 1]; fix: e.g. {name}=0.2"
            )
    total = sum(splits.values())
    if total > 1 + 1e-9:
        raise ConfigError(
            f"split fractions sum to {total:g} > 1; fix: make them add up to at most 1 (the "
            f"rest goes to '{REST_SPLIT}')"
        )
    if REST_SPLIT in splits:
        if abs(total - 1) > 1e-9:
            raise ConfigError(
                f"split fractions sum to {total:g} but '{REST_SPLIT}' is given; fix: make them add "
                f"up to 1, or leave '{REST_SPLIT}' out and it gets the rest"
            )
        return dict(splits)
    rest = max(0.0, 1 - total)
    return {REST_SPLIT: rest, **splits} if rest > 1e-9 else dict(splits)


def split_items(
    items: list[str], splits: dict[str, float] | None, seed: int = 0
) -> dict[str, list[str]]:
    """Assign ``items`` to splits: split name → its items, in the order of ``items``.

    Without ``splits`` every item goes to ``all``. Otherwise the items are shuffled with
    ``random.Random(seed)`` and cut into consecutive pieces whose sizes are the fractions of
    ``len(items)`` (largest remainder rounding, every split at least one item while possible).
    """
    if not splits:
        return {NO_SPLIT: list(items)}
    fractions = check_splits(splits)
    n = len(items)
    exact = {name: f * n for name, f in fractions.items()}
    sizes = {name: int(v) for name, v in exact.items()}
    by_remainder = sorted(fractions, key=lambda name: (-(exact[name] - sizes[name]), name))
    for name in by_remainder[: n - sum(sizes.values())]:
        sizes[name] += 1
    for name in fractions:
        # a split that was asked for takes one item from the largest split, when it can spare one
        largest = max(sizes, key=lambda k: (sizes[k], k))
        if sizes[name] == 0 and sizes[largest] > 1:
            sizes[name], sizes[largest] = 1, sizes[largest] - 1
    order = list(range(n))
    random.Random(seed).shuffle(order)
    assignment: dict[int, str] = {}
    start = 0
    for name in sorted(fractions):
        for i in order[start : start + sizes[name]]:
            assignment[i] = name
        start += sizes[name]
    return {
        name: [item for i, item in enumerate(items) if assignment[i] == name]
        for name in sorted(fractions)
    }
