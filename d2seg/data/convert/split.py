"""Deterministic, seeded train/val/... splits of a list of items.

``--split val=0.2 test=0.1`` gives 20 % of the items to ``val``, 10 % to ``test`` and the rest to
``train``. The same items, fractions and seed always give the same split; sizes are exact (largest
remainder rounding), and a split asked for gets at least one item when there are enough items.

``--group-by REGEX`` keeps related items together: the first capture group of ``REGEX`` searched
in an item's file stem (the whole match when it has no group) is its group, e.g. ``'^([^_]+)_'``
makes ``car7_03.jpg`` group ``car7``. Whole groups are then assigned, seeded, so that each split
gets as close to its fraction of the items as whole groups allow; no group spans two splits. An
item whose stem does not match is an error (a silent group of its own could leak into another
split).
"""

import random
import re
from collections import Counter
from pathlib import PurePosixPath

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


def _split_sizes(fractions: dict[str, float], n: int) -> dict[str, int]:
    """Item counts per split summing to ``n``: largest remainder rounding of ``fraction * n``,
    then every split at least one item while the largest can spare one."""
    exact = {name: f * n for name, f in fractions.items()}
    sizes = {name: int(v) for name, v in exact.items()}
    by_remainder = sorted(fractions, key=lambda name: (-(exact[name] - sizes[name]), name))
    for name in by_remainder[: n - sum(sizes.values())]:
        sizes[name] += 1
    for name in fractions:
        largest = max(sizes, key=lambda k: (sizes[k], k))
        if sizes[name] == 0 and sizes[largest] > 1:
            sizes[name], sizes[largest] = 1, sizes[largest] - 1
    return sizes


def item_groups(items: list[str], pattern: str) -> list[str]:
    """The group of each item (see the module docstring); raises ConfigError naming the first
    item whose file stem ``pattern`` does not match, or an invalid ``pattern``."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(
            f"--group-by {pattern!r} is not a valid regular expression ({e}); fix: e.g. "
            f"--group-by '^([^_]+)_' for names like car7_03.jpg"
        ) from e
    groups = []
    for item in items:
        stem = PurePosixPath(item).stem
        match = regex.search(stem)
        group = None if match is None else match.group(1 if regex.groups else 0)
        if not group:
            raise ConfigError(
                f"--group-by {pattern!r}: '{item}' (stem '{stem}') has no group (the first "
                f"capture group, or the match without groups, is missing or empty); fix: adapt "
                f"the regular expression, or rename or remove that item"
            )
        groups.append(group)
    return groups


def _assign_groups(
    groups: list[str], sizes: dict[str, int], seed: int
) -> dict[str, str]:
    """Group → split: groups in a seeded random order, larger ones first, each to the split
    furthest below its size (ties: the name first in sorted order)."""
    counts = Counter(groups)
    order = sorted(counts)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -counts[g])  # stable: equal sizes keep the shuffled order
    filled = dict.fromkeys(sizes, 0)
    split_of = {}
    for group in order:
        name = max(sorted(sizes), key=lambda k: sizes[k] - filled[k])
        split_of[group] = name
        filled[name] += counts[group]
    return split_of


def split_items(
    items: list[str],
    splits: dict[str, float] | None,
    seed: int = 0,
    groups: list[str] | None = None,
) -> dict[str, list[str]]:
    """Assign ``items`` to splits: split name → its items, in the order of ``items``.

    Without ``splits`` every item goes to ``all``. Otherwise, without ``groups``, the items are
    shuffled with ``random.Random(seed)`` and cut into consecutive pieces whose sizes are the
    fractions of ``len(items)`` (largest remainder rounding, every split at least one item while
    possible). With ``groups`` (one group name per item, e.g. from :func:`item_groups`) whole
    groups are assigned instead, aiming at the same sizes.
    """
    if not splits:
        return {NO_SPLIT: list(items)}
    fractions = check_splits(splits)
    sizes = _split_sizes(fractions, len(items))
    if groups is not None:
        split_of = _assign_groups(groups, sizes, seed)
        assignment = {i: split_of[group] for i, group in enumerate(groups)}
    else:
        order = list(range(len(items)))
        random.Random(seed).shuffle(order)
        assignment = {}
        start = 0
        for name in sorted(fractions):
            for i in order[start : start + sizes[name]]:
                assignment[i] = name
            start += sizes[name]
    return {
        name: [item for i, item in enumerate(items) if assignment[i] == name]
        for name in sorted(fractions)
    }
