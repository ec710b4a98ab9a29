#!/usr/bin/env python
"""Convert Labelme (or VIA, or mask-image) annotations to COCO instances, semantic and panoptic.

    python tools/convert_labelme.py --input DIR --output OUT [--labels labels.txt]
        [--split val=0.2 ...] [--seed 0] [--group-by REGEX] [--strict] [--workers N]
        [--format labelme|via|masks] [--outputs instances,sem_seg,panoptic]

Writes OUT/annotations/<split>.json, OUT/images/, OUT/sem_seg/<split>/, OUT/panoptic/ and
OUT/report.json (see d2seg.data.convert.layout; --outputs instances writes only the COCO
instances, images and report), then prints a summary table (``--json``: the summary as JSON).
Splits are drawn among the files that converted; --group-by '^([^_]+)_' keeps the files of one
group (here the name part before the first '_', e.g. a Carvana car) in one split.
Nothing is written when it fails; user mistakes end with one line on stderr and exit status 2.
"""

import argparse
import json

from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.convert.pipeline import OUTPUTS, convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.data.convert.split import parse_split_args
from d2seg.utils.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="folder of annotation files")
    parser.add_argument("--output", required=True, help="new folder to create")
    parser.add_argument("--format", default="labelme", help="labelme (default), via or masks")
    parser.add_argument(
        "--labels", help="labels.txt: one class per line, in id order (default: sorted labels used)"
    )
    parser.add_argument(
        "--split", nargs="+", action="extend", default=[], metavar="NAME=FRACTION",
        help="e.g. val=0.2 test=0.1; the rest goes to train (default: one split 'all')",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split shuffle")
    parser.add_argument(
        "--group-by", metavar="REGEX",
        help="keep groups in one split: the first capture group (else the match) of REGEX in a "
        "file's name without suffix is its group, e.g. '^([^_]+)_'; a name it does not match is "
        "an error",
    )
    parser.add_argument("--strict", action="store_true", help="every reported problem is an error")
    parser.add_argument("--workers", type=int, default=1, help="processes converting files")
    parser.add_argument(
        "--outputs", default=",".join(OUTPUTS), metavar="LIST",
        help=f"comma-separated subset of {','.join(OUTPUTS)} to write (default: all); "
        f"'instances' alone saves the time and disk of two PNGs per image",
    )
    parser.add_argument(
        "--allow-outside-root", action="store_true",
        help="accept imagePath values that resolve outside --input",
    )
    defaults = SourceOptions()
    parser.add_argument(
        "--mask-label", default=defaults.mask_label, metavar="NAME",
        help="class of annotations that name none: every mask of --format masks (default "
        "'object') and VIA regions without a label/class/name attribute (default 'balloon')",
    )
    parser.add_argument(
        "--mask-instances", choices=("components", "single"), default=defaults.mask_instances,
        help="--format masks: one instance per connected component, or per mask file",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    summary = convert_dataset(
        args.input,
        args.output,
        fmt=args.format,
        labels_file=args.labels,
        splits=parse_split_args(args.split) or None,
        seed=args.seed,
        group_by=args.group_by,
        strict=args.strict,
        workers=args.workers,
        outputs=[name.strip() for name in args.outputs.split(",") if name.strip()],
        options=SourceOptions(
            allow_outside_root=args.allow_outside_root,
            mask_label=args.mask_label,
            mask_instances=args.mask_instances,
        ),
    )
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(format_summary(summary, args.input, args.output))
    return 0


def format_summary(summary: dict, input_dir: str, output_dir: str) -> str:
    """The conversion summary as a few lines a person reads at a glance."""
    splits = summary["splits"]
    total = sum(s["images"] for s in splits.values())
    categories = ", ".join(f"{i} {name}" for i, name in enumerate(summary["categories"], 1))
    grouped = any("groups" in s for s in splits.values())
    lines = [
        f"Converted {total} images from {input_dir} ({summary['format']}) to {output_dir}",
        f"  categories ({len(summary['categories'])}): {categories}",
        f"  {'split':<8}{'images':>8}{'annotations':>13}{'no objects':>12}"
        + (f"{'groups':>8}" if grouped else ""),
    ]
    for name, s in splits.items():
        lines.append(
            f"  {name:<8}{s['images']:>8}{s['annotations']:>13}{s['images_without_objects']:>12}"
            + (f"{s['groups']:>8}" if grouped else "")
        )
    report = summary["report"]
    if report:
        counts = ", ".join(f"{n} {action}" for action, n in sorted(report.items()))
        details = ConvertedLayout(output_dir).report_json
        lines.append(f"  problems: {counts} (details in {details})")
    else:
        lines.append("  problems: none")
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
