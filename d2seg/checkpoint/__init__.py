"""Checkpoint saving and loading (fvcore's Checkpointer, data-only and atomic)."""

from d2seg.checkpoint.checkpointer import (
    D2SegCheckpointer,
    check_free_space,
    estimated_checkpoint_bytes,
    load_checkpoint_file,
)

__all__ = [
    "D2SegCheckpointer",
    "check_free_space",
    "estimated_checkpoint_bytes",
    "load_checkpoint_file",
]
