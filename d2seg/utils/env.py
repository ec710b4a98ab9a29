"""Seeding of every random number generator a training run touches."""

import os
import random

import numpy as np
import torch


def seed_all_rng(seed: int | None = None) -> int:
    """Seed Python, NumPy and torch; ``None`` or a negative seed draws a fresh one.

    Returns the seed used, so a run can log it and be repeated.
    """
    if seed is None or seed < 0:
        seed = int.from_bytes(os.urandom(4), "big") % 2**31
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return seed
