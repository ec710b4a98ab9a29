#!/usr/bin/env python
"""Flash/RAM figures of a Cortex-M7 build of a lowered model, and its mask vs the host's.

    python deploy/mcu_report.py DIR [--mask mask_m7.pgm --host-mask mask_host.pgm]

DIR is a folder of ``deploy/lower_to_cpp.py --target stm32h743`` after ``make -C DIR qemu``
(which writes DIR/size.txt, ``arm-none-eabi-size -A prog.elf``). Prints flash (code + weights +
.data image) against the 2 MiB flash and the 1.5 MiB model budget, RAM per region against the
STM32H743's, and the share of pixels where the two masks agree. Exits 1 when a budget is
exceeded or the masks differ.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from d2seg.errors import ConfigError  # noqa: E402
from d2seg.export.edge.boards import elf_memory  # noqa: E402
from d2seg.export.edge.targets import KIB, TARGETS  # noqa: E402
from d2seg.utils.cli import run_cli  # noqa: E402


def read_pgm(path: Path) -> np.ndarray:
    """The pixels of a binary 8-bit PGM (P5, maxval 255, no comments) as uint8 H×W."""
    data = path.read_bytes() if path.is_file() else b""
    fields = data.split(maxsplit=4)
    if len(fields) < 5 or fields[0] != b"P5" or fields[3] != b"255":
        raise ConfigError(f"{path}: not a binary 8-bit PGM; fix: pass the mask prog wrote")
    width, height = int(fields[1]), int(fields[2])
    return np.frombuffer(fields[4][:width * height], np.uint8).reshape(height, width)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="lowered --target stm32h743 folder after make qemu")
    parser.add_argument("--mask", help="mask written in QEMU (relative to the folder)")
    parser.add_argument("--host-mask", help="mask of the host build (relative to the folder)")
    args = parser.parse_args()
    folder = Path(args.folder)
    size_file = folder / "size.txt"
    if not size_file.is_file():
        raise ConfigError(f"{size_file} is missing; fix: run make -C {folder} qemu IN=in.pgm")
    memory = elf_memory(size_file.read_text())
    report = json.loads((folder / "report.json").read_text())
    target = TARGETS["stm32h743"]
    ok = memory["flash_bytes"] <= target.flash_budget
    print(f"flash: {memory['flash_bytes']:,} bytes = {memory['flash_bytes'] / KIB:.0f} KiB "
          f"(weights {report['weights_bytes'] / KIB:.0f} KiB) of the {target.flash_budget // KIB}"
          f" KiB model budget ({target.flash // KIB} KiB flash)")
    ram = sum(memory["regions"].values())
    print(f"RAM: {ram / KIB:.0f} KiB in all (arena {report['arena_bytes'] / KIB:.0f} KiB, "
          f"liveness lower bound {report['liveness_lower_bound_bytes'] / KIB:.0f} KiB)")
    for name, used in memory["regions"].items():
        size = memory["region_bytes"][name]
        ok &= used <= size
        print(f"  {name:<9} {used / KIB:7.1f} of {size // KIB} KiB, {(size - used) / KIB:.1f} "
              f"KiB left")
    if args.mask and args.host_mask:
        mcu, host = read_pgm(folder / args.mask), read_pgm(folder / args.host_mask)
        agree = float((mcu == host).mean()) if mcu.shape == host.shape else 0.0
        ok &= agree == 1.0
        print(f"mask agreement Cortex-M7 (QEMU) vs host: {agree:.4%} of {mcu.size} pixels "
              f"({'bit-identical' if agree == 1.0 else 'DIFFERENT'}); foreground "
              f"{float((mcu > 0).mean()):.1%}")
    return 0 if ok else 1


if __name__ == "__main__":
    run_cli(main)
