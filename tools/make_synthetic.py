#!/usr/bin/env python
"""Write a deterministic synthetic dataset (the shipped annotations/ samples come from here).

    python tools/make_synthetic.py balloons --output annotations/balloons --num-images 12 \
        --size 160 224 --seed 0

``balloons`` and ``chipsets`` are Labelme folders (``*.jpg`` + ``*.json`` + ``labels.txt``);
``carvana`` is ``<id>.jpg`` + ``<id>_mask.gif`` pairs (convert with ``--format masks``).
The same arguments always give byte-identical files.
"""

import argparse

from d2seg.data.synthetic import SYNTHETIC_DATASETS
from d2seg.utils.cli import run_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(SYNTHETIC_DATASETS))
    parser.add_argument("--output", required=True, help="folder to create (must not exist)")
    parser.add_argument("--num-images", type=int, default=12)
    parser.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="image size in pixels (default: the kind's own)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = {"size": tuple(args.size)} if args.size else {}
    out = SYNTHETIC_DATASETS[args.kind](args.output, args.num_images, seed=args.seed, **size)
    print(f"wrote {args.num_images} {args.kind} images to {out}")


if __name__ == "__main__":
    run_cli(main)
