#!/usr/bin/env python
"""Download torchvision's published weights for a backbone, once, for MODEL.WEIGHTS.

    python tools/fetch_weights.py resnet50 [--output weights/] [--url URL]

Writes OUTPUT/<name>.pth (a plain state dict, sha256 checked against the file name) and prints
the MODEL.WEIGHTS line to train with. Training itself never downloads. ``--url`` fetches the same
file from a mirror or a local copy (``file:///path/resnet50-11ad3fa6.pth``).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2seg.utils.cli import run_cli  # noqa: E402
from d2seg.utils.weights import KNOWN_WEIGHTS, fetch_weights, published_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"one of {', '.join(KNOWN_WEIGHTS)}")
    parser.add_argument("--output", default="weights", help="folder to write <name>.pth into")
    parser.add_argument("--url", help="download from here instead of torchvision's URL")
    args = parser.parse_args()
    url, weights = published_weights(args.name)
    url = args.url or url
    path = fetch_weights(url, os.path.join(args.output, f"{args.name}.pth"),
                         progress=sys.stderr.isatty())
    print(f"wrote {path} ({weights} from {url})")
    print(f"use: MODEL.WEIGHTS {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
