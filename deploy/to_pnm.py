#!/usr/bin/env python
"""Turn any image into the binary PGM (grayscale) or PPM (RGB) a generated C++ model reads.

    python deploy/to_pnm.py photo.jpg --height 128 --width 192 --format L --output in.pgm
    python deploy/to_pnm.py car.jpg --height 128 --width 128 --keep-aspect 117 --output in.pgm

The generated program does no resizing: give the model's input size (in its report.json).
EXIF orientation is applied; the image is resized with bilinear filtering: stretched to the
input size, or with ``--keep-aspect PAD`` resized without distortion, placed top-left and the
rest filled with PAD, the model's ``MODEL.PIXEL_MEAN`` (d2seg's training pads with it, so the
model sees what it was trained on; lower with ``--calib-keep-aspect PAD`` to calibrate alike).
The image then fills the top-left region printed, and so does its mask in the model's output.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from d2seg.errors import DatasetError  # noqa: E402
from d2seg.export.samples import letterbox_image, letterbox_size  # noqa: E402
from d2seg.utils.cli import run_cli  # noqa: E402
from d2seg.utils.io import atomic_open  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="input image (any format Pillow reads)")
    parser.add_argument("--height", type=int, required=True, help="model input height (pixels)")
    parser.add_argument("--width", type=int, required=True, help="model input width (pixels)")
    parser.add_argument("--format", choices=("L", "RGB"), default="L", help="L → PGM, RGB → PPM")
    parser.add_argument("--keep-aspect", type=float, metavar="PAD",
                        help="keep the aspect ratio; fill the rest with PAD (the model's "
                        "MODEL.PIXEL_MEAN)")
    parser.add_argument("--output", required=True, help="output .pgm/.ppm path")
    args = parser.parse_args()
    try:
        with Image.open(args.image) as img:
            img = ImageOps.exif_transpose(img).convert(args.format)
    except OSError as e:
        raise DatasetError(f"cannot read image {args.image} ({e}); fix: check the path") from None
    if args.keep_aspect is None:
        img = img.resize((args.width, args.height), Image.BILINEAR)
    else:
        pixels = np.asarray(img).reshape(img.height, img.width, -1)
        height, width = letterbox_size(img.height, img.width, args.height, args.width)
        fitted = letterbox_image(pixels, args.height, args.width, args.keep_aspect)
        img = Image.fromarray(fitted[:, :, 0] if args.format == "L" else fitted)
    with atomic_open(args.output, "wb") as f:
        img.save(f, format="PPM")
    print(f"{args.output}: {args.width}x{args.height} {'PGM' if args.format == 'L' else 'PPM'}"
          + (f", image in the top-left {width}x{height}" if args.keep_aspect is not None else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
