"""Memory profiles of the devices a lowered model is built for (``--target``).

A :class:`Target` lists its RAM regions fastest first, each with the bytes the program itself
keeps there (stack, heap; the I/O buffers of main.cpp are added per model) and the attribute
that puts an array there, and the flash the weights and code must fit in. The planner
(:func:`d2seg.export.edge.planner.plan_regions`) places the arena's buffers into these regions.
"""

from dataclasses import dataclass

from d2seg.errors import ConfigError

KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Region:
    """A RAM region: ``size`` bytes, ``reserved`` of them for the program (stack, heap), and
    ``attribute`` the C++ attribute that puts an array there ("" for the default .bss)."""

    name: str
    size: int
    reserved: int = 0
    attribute: str = ""
    note: str = ""


def _section(name: str) -> str:
    """GCC attribute for a zero-initialised array in section ``.bss.d2seg_{name}`` (the board's
    linker script maps it to the region; .bss.* names keep it NOBITS)."""
    return f'__attribute__((section(".bss.d2seg_{name}")))'


@dataclass(frozen=True)
class Target:
    """``regions`` fastest first; ``io_region``: where main.cpp's input/output buffers live;
    ``flash`` bytes for weights + code (0: unlimited); ``flash_budget``: the share of it the
    model may take (room left for the application)."""

    name: str
    description: str
    regions: tuple[Region, ...]
    io_region: str
    flash: int = 0
    flash_budget: int = 0
    board: str = ""  # the board project written next to the model ("" for none)


TARGETS = {
    "host": Target(
        "host", "a desktop or server CPU: one arena in .bss", (Region("ram", 1 << 40),), "ram"),
    "stm32h743": Target(
        "stm32h743",
        "STM32H743 (Cortex-M7, 480 MHz): 128 KiB DTCM, 512 KiB AXI SRAM, 288 KiB SRAM1-3, "
        "2 MiB flash",
        (Region("DTCM", 128 * KIB, 16 * KIB, _section("dtcm"),
                note="zero-wait-state, 16 KiB kept for the stack"),
         Region("AXI_SRAM", 512 * KIB, 0, _section("axisram"), note="D1 domain, cached"),
         Region("SRAM123", 288 * KIB, 16 * KIB, _section("sram123"),
                note="D2 domain; 16 KiB kept for the heap (stdio buffers)")),
        io_region="SRAM123", flash=2 * MIB, flash_budget=1536 * KIB, board="cortex-m7-qemu"),
    "mps2-an500": Target(
        "mps2-an500",
        "bench only: QEMU's mps2-an500 Cortex-M7 board with its own 4 MiB SSRAM1 as flash and "
        "4 MiB SSRAM2/3 split like the H743's regions, for instruction counts of models too "
        "big for an H743 (a float32 build)",
        (Region("DTCM", 128 * KIB, 16 * KIB, _section("dtcm"), note="16 KiB kept for the stack"),
         Region("AXI_SRAM", 512 * KIB, 0, _section("axisram")),
         Region("SRAM123", 4 * MIB - 640 * KIB, 16 * KIB, _section("sram123"),
                note="the rest of SSRAM2/3; 16 KiB kept for the heap")),
        io_region="SRAM123", flash=4 * MIB, flash_budget=4 * MIB, board="cortex-m7-qemu"),
    "cortex-m7-generic": Target(
        "cortex-m7-generic",
        "a Cortex-M7 with 512 KiB of contiguous SRAM and 2 MiB flash",
        (Region("SRAM", 512 * KIB, 32 * KIB, note="32 KiB kept for stack and heap"),),
        io_region="SRAM", flash=2 * MIB, flash_budget=1536 * KIB),
    "esp32s3": Target(
        "esp32s3",
        "ESP32-S3 (Xtensa LX7): about 320 KiB of internal SRAM free for data, 8 MiB PSRAM, "
        "8 MiB flash",
        (Region("SRAM", 320 * KIB, 32 * KIB, note="internal; 32 KiB kept for the tasks' stacks"),
         Region("PSRAM", 8 * MIB, 0, attribute="EXT_RAM_BSS_ATTR",
                note="octal SPI PSRAM, used when the arena exceeds internal SRAM")),
        io_region="PSRAM", flash=8 * MIB, flash_budget=6 * MIB, board="esp-idf"),
}


def get_target(name: str) -> Target:
    """The profile called ``name``; ConfigError naming the choices otherwise."""
    if name not in TARGETS:
        raise ConfigError(f"--target {name!r} is unknown; fix: use one of {', '.join(TARGETS)}")
    return TARGETS[name]
