"""Static arena planning from tensor lifetimes (TensorFlow Lite Micro's greedy-by-size).

Every buffer the generated code needs (activations between nodes and per-node scratch such as
the im2col matrix) gets a fixed byte offset in one arena at generation time. Two buffers may
share bytes when their lifetimes (first and last step that touches them, inclusive) do not
intersect. Buffers are placed largest first, each at the lowest offset that does not overlap a
placed buffer whose lifetime intersects its own.
"""

from dataclasses import dataclass

ALIGNMENT = 16  # bytes: every buffer starts on a 16-byte boundary (SIMD loads, alignas(16))


@dataclass(frozen=True)
class Buffer:
    """A buffer of ``size`` bytes live from step ``first`` to step ``last`` (inclusive)."""

    name: str
    size: int
    first: int
    last: int

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    """``offsets`` in bytes per buffer name; ``size`` the arena bytes; ``lower_bound`` the
    largest sum of buffer sizes live at one step (no plan can be smaller); ``naive`` the sum of
    every buffer's size (one slot each)."""

    offsets: dict[str, int]
    size: int
    lower_bound: int
    naive: int


def aligned(size: int) -> int:
    return (size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_arena(buffers: list[Buffer]) -> ArenaPlan:
    """Greedy-by-size placement of ``buffers`` (sizes are rounded up to :data:`ALIGNMENT`)."""
    placed: list[tuple[int, Buffer]] = []
    offsets = {}
    for buffer in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        size = aligned(buffer.size)
        conflicts = sorted(
            (offset, aligned(other.size)) for offset, other in placed
            if other.overlaps_in_time(buffer)
        )
        offset = 0
        for start, length in conflicts:
            if offset + size <= start:
                break
            offset = max(offset, start + length)
        placed.append((offset, buffer))
        offsets[buffer.name] = offset
    steps = {s for b in buffers for s in (b.first, b.last)}
    lower_bound = max(
        (sum(aligned(b.size) for b in buffers if b.first <= step <= b.last) for step in steps),
        default=0,
    )
    size = max((offsets[b.name] + aligned(b.size) for b in buffers), default=0)
    return ArenaPlan(offsets, size, lower_bound, sum(aligned(b.size) for b in buffers))
