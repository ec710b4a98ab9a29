"""Static arena planning from tensor lifetimes (TensorFlow Lite Micro's greedy-by-size).

Every buffer the generated code needs (activations between nodes and per-node scratch such as
the im2col matrix) gets a fixed byte offset in one arena at generation time. Two buffers may
share bytes when their lifetimes (first and last step that touches them, inclusive) do not
intersect. Buffers are placed largest first, each at the lowest offset that does not overlap a
placed buffer whose lifetime intersects its own.

:func:`plan_regions` does the same over several memory regions of bounded size (a
microcontroller's DTCM, AXI SRAM, SRAM1-3): hot buffers (per-node scratch such as im2col
columns and accumulator rows, read many times per byte) are placed first, each buffer in the
first (fastest) region where it fits, so one arena may be split across regions.
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
    hot: bool = False  # read many times per byte (scratch): placed first, in the fastest region

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


def _lowest_offset(placed: list[tuple[int, Buffer]], buffer: Buffer) -> int:
    """The lowest offset where ``buffer`` overlaps no placed buffer live at the same time."""
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
    return offset


def live_bytes(buffers: list[Buffer]) -> dict[int, int]:
    """Step → sum of the (aligned) sizes of the buffers live at that step."""
    steps = {s for b in buffers for s in (b.first, b.last)}
    return {step: sum(aligned(b.size) for b in buffers if b.first <= step <= b.last)
            for step in steps}


def plan_arena(buffers: list[Buffer]) -> ArenaPlan:
    """Greedy-by-size placement of ``buffers`` (sizes are rounded up to :data:`ALIGNMENT`)."""
    placed: list[tuple[int, Buffer]] = []
    offsets = {}
    for buffer in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        offset = _lowest_offset(placed, buffer)
        placed.append((offset, buffer))
        offsets[buffer.name] = offset
    size = max((offsets[b.name] + aligned(b.size) for b in buffers), default=0)
    return ArenaPlan(offsets, size, max(live_bytes(buffers).values(), default=0),
                     sum(aligned(b.size) for b in buffers))


@dataclass(frozen=True)
class RegionPlan:
    """``region`` and ``offsets`` (within its region) per buffer name; ``sizes`` the arena bytes
    per region (every region named, 0 when unused); ``lower_bound``/``naive`` as in
    :class:`ArenaPlan`; ``unplaced`` the buffers no region had room for (empty when it fits)."""

    region: dict[str, str]
    offsets: dict[str, int]
    sizes: dict[str, int]
    lower_bound: int
    naive: int
    unplaced: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(self.sizes.values())


def plan_regions(buffers: list[Buffer], capacities: dict[str, int]) -> RegionPlan:
    """Place ``buffers`` into regions of at most ``capacities[name]`` bytes (dict order: fastest
    first). Hot buffers first, then largest first; each buffer goes to the first region with a
    free offset below its capacity. With one region this is :func:`plan_arena`."""
    placed: dict[str, list[tuple[int, Buffer]]] = {name: [] for name in capacities}
    region, offsets, unplaced = {}, {}, []
    split = len(capacities) > 1
    for buffer in sorted(buffers, key=lambda b: (-(b.hot and split), -b.size, b.first, b.name)):
        for name, capacity in capacities.items():
            offset = _lowest_offset(placed[name], buffer)
            if offset + aligned(buffer.size) <= capacity:
                placed[name].append((offset, buffer))
                region[buffer.name], offsets[buffer.name] = name, offset
                break
        else:
            unplaced.append(buffer.name)
    sizes = {name: max((o + aligned(b.size) for o, b in entries), default=0)
             for name, entries in placed.items()}
    return RegionPlan(region, offsets, sizes, max(live_bytes(buffers).values(), default=0),
                      sum(aligned(b.size) for b in buffers), tuple(unplaced))
