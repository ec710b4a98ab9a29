#!/usr/bin/env python
"""Lower a static ONNX segmentation graph to dependency-free C++17.

    python deploy/lower_to_cpp.py model.onnx --output DIR [--int8 --calib IMAGES_DIR
        [--calib-method minmax|percentile|mse] [--mask-output]] [--name NAME]
        [--target host|stm32h743|cortex-m7-generic|esp32s3|mps2-an500]

writes DIR/{NAME.h, NAME.cpp, NAME_weights.bin + NAME_weights.S (the constants, linked with
.incbin), main.cpp, Makefile, CMakeLists.txt, report.json}; build the demo program with
``make -C DIR`` and run ``DIR/prog in.ppm out.pgm`` (the mask: class k at gray k*255/(K-1)).
An fp16 ONNX (export_onnx.py --fp16) is refused: lower the float32 model.onnx. --target places
the arena in the device's RAM regions (report: per region used/left; a model that does not fit
fails naming its largest live set); stm32h743 also writes board/ (linker script, startup code,
CMake toolchain file) and ``make -C DIR qemu IN=in.pgm`` builds it for a Cortex-M7 and runs it
in qemu-system-arm -M mps2-an500 (``qemu-count``: with -icount shift=0, the run's SysTick
ticks x 40 are its instructions); mps2-an500 (bench only) is the same board project on the QEMU
board's own 4 MiB memories, for models too big for an H743; esp32s3 writes esp_idf/NAME/, an ESP-IDF component (add
DIR/esp_idf to EXTRA_COMPONENT_DIRS), and esp_idf/sdkconfig.defaults. --calib-method picks the
int8 activation ranges; --mask-output ends a one-logit int8 model in its mask (no float after
the graph; the output holds class indices 0/1).
"""

import argparse

from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.quantize import CALIB_METHODS
from d2seg.export.edge.report import format_report
from d2seg.export.edge.targets import TARGETS
from d2seg.utils.cli import run_cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", help="static ONNX graph (1×C×H×W float input, pixels 0-255)")
    parser.add_argument("--output", required=True, help="folder to create")
    parser.add_argument("--name", default="model", help="C prefix of files and entry point")
    parser.add_argument("--int8", action="store_true", help="quantise weights and activations")
    parser.add_argument("--calib", help="folder of calibration images, searched recursively "
                        "(with --int8)")
    parser.add_argument("--calib-method", default="minmax", choices=CALIB_METHODS,
                        help="activation ranges: min/max, 0.01-99.99 percentiles, or the "
                        "squared-error-optimal clipping (with --int8; default minmax)")
    parser.add_argument("--calib-keep-aspect", type=float, metavar="PAD",
                        help="letterbox the calibration images (aspect kept, the rest PAD, the "
                        "model's MODEL.PIXEL_MEAN) as deploy/to_pnm.py --keep-aspect PAD feeds "
                        "the model, instead of stretching them (with --int8)")
    parser.add_argument("--mask-output", action="store_true",
                        help="one-logit int8 models: output the mask (int8 logit above its zero "
                        "point) instead of the logit, so no float runs after the graph")
    parser.add_argument("--target", default="host", choices=sorted(TARGETS),
                        help="memory profile and board project (default host)")
    args = parser.parse_args()
    report = lower_onnx_to_cpp(args.onnx, args.output, name=args.name, int8=args.int8,
                               calib_dir=args.calib, calib_method=args.calib_method,
                               mask_output=args.mask_output, target=args.target,
                               calib_pad_value=args.calib_keep_aspect)
    print(format_report(report))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
