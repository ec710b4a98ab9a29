#!/usr/bin/env python
"""Write a converted dataset (tools/convert.py --output OUT) as YOLO-seg or Labelme JSON.

    python tools/export_dataset.py OUT --to yolo --output OUT_yolo
    python tools/export_dataset.py OUT --to labelme --output OUT_labelme

YOLO-seg: images/<split>/, labels/<split>/*.txt and data.yaml, to train Ultralytics on the same
split; Labelme: <split>/<stem>.json beside each image, plus labels.txt. Prints a summary
(``--json``: as JSON). Nothing is written when it fails; user mistakes end with one line on
stderr and exit status 2.
"""

import argparse
import json

from d2seg.data.convert.export import FORMATS, export_dataset
from d2seg.utils.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("converted", help="a tools/convert.py output folder")
    parser.add_argument("--to", required=True, choices=FORMATS, help="the format to write")
    parser.add_argument("--output", required=True, help="new folder to create")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    summary = export_dataset(args.converted, args.output, to=args.to)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"Exported {args.converted} as {summary['to']} to {args.output}")
    for split, counts in summary["splits"].items():
        print(f"  {split:<8}{counts['images']:>8} images{counts['instances']:>8} instances")
    if summary["parts_dropped"]:
        print(f"  {summary['parts_dropped']} extra polygon part(s) dropped: a YOLO line holds "
              f"one polygon per instance")
    return 0


if __name__ == "__main__":
    run_cli(main)
