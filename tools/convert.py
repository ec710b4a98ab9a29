#!/usr/bin/env python
"""Convert annotations (Labelme, VIA, masks, label maps, Kaggle RLE, COCO, YOLO, rasters) to
COCO instances, semantic PNGs and COCO panoptic.

    python tools/convert.py --input DIR --output OUT [--labels labels.txt]
        [--split val=0.2 ...] [--seed 0] [--group-by REGEX] [--strict] [--workers N]
        [--format labelme|via|masks|semantic|kaggle-rle|coco|yolo|raster]
        [--outputs instances,sem_seg,panoptic]

    --format semantic   --images DIR --labels-dir DIR [--label-suffix _L]
                        --class-names a,b,c | --palette classes.csv [--ignore-value 11]
                        [--thing-classes a,b]
    --format masks      --images DIR [--masks DIR [--mask-suffix _mask]] [--mask-classes a,b]
    --format kaggle-rle --csv train.csv --images DIR [--rle-order column|row]
    --format coco       --coco instances.json --images DIR [--prune-categories]
    --format yolo       --input DATASET (images/, labels/, data.yaml)
    --format raster     --images DIR --labels-dir DIR [--patch 256 --stride 256]
                        --class-names a,b,c [--ignore-value 0]

(``tools/convert_labelme.py`` is the same tool under its first name.)

Writes OUT/annotations/<split>.json, OUT/images/, OUT/sem_seg/<split>/, OUT/panoptic/ and
OUT/report.json (see d2seg.data.convert.layout; --outputs instances writes only the COCO
instances, images and report), then prints a summary table (``--json``: the summary as JSON).
Splits are drawn among the files that converted; --group-by '^([^_]+)_' keeps the files of one
group (here the name part before the first '_', e.g. a Carvana car) in one split.
Nothing is written when it fails; user mistakes end with one line on stderr and exit status 2.
"""

import argparse
import json
from pathlib import Path

from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.convert.pipeline import OUTPUTS, available_formats, convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.data.convert.split import parse_split_args
from d2seg.utils.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--input", "--images", dest="input", required=True,
        help="folder of annotation files, or of the images (--images) for semantic, masks with "
        "--masks, kaggle-rle, coco and raster",
    )
    parser.add_argument("--output", required=True, help="new folder to create")
    parser.add_argument(
        "--format", default="labelme", help=f"one of {', '.join(available_formats())}"
    )
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
    parser.add_argument(
        "--labels-dir", "--masks", dest="labels_dir", metavar="DIR",
        help="semantic, raster: the label images; masks: the masks (paired with the images by "
        "stem)",
    )
    parser.add_argument(
        "--label-suffix", "--mask-suffix", dest="label_suffix", default="", metavar="S",
        help="what follows the image's stem in its label image's name, e.g. _L, "
        "_gtFine_labelIds, _mask",
    )
    parser.add_argument(
        "--class-names", type=_names, metavar="A,B,C|FILE",
        help="semantic, raster: the class of label values 0, 1, 2, ... (a comma-separated list "
        "or a file with one name per line); kaggle-rle: the names of ClassId 1, 2, ...; "
        "'_background_' marks background, '__ignore__' ignore",
    )
    parser.add_argument(
        "--mask-classes", type=_names, metavar="A,B",
        help="masks: multi-class masks, value k (1, 2, ...) is the k-th name, 0 is background",
    )
    parser.add_argument(
        "--palette", metavar="FILE",
        help="colour-coded label images: classes.csv (name,r,g,b per class, in value order) or "
        "classes.json",
    )
    parser.add_argument(
        "--ignore-value", type=int, metavar="V",
        help="the label value written as 255 = ignore (CamVid 11, Cityscapes 255)",
    )
    parser.add_argument(
        "--thing-classes", type=_names, default=(), metavar="A,B",
        help="semantic: classes whose connected components are also instances",
    )
    parser.add_argument(
        "--resize-masks", action="store_true",
        help="resize label images of another size than their image (nearest) instead of "
        "skipping them",
    )
    parser.add_argument(
        "--copy-images", action="store_true",
        help="copy the images into OUT/images (default: hard links where possible)",
    )
    parser.add_argument("--csv", help="kaggle-rle: the train CSV of run-length masks")
    parser.add_argument(
        "--rle-order", choices=("column", "row"),
        help="kaggle-rle: pixel order of the runs (default from the header: column for Airbus "
        "and Severstal, row for Carvana)",
    )
    parser.add_argument("--coco", dest="coco_file", help="coco: the COCO instances json")
    parser.add_argument(
        "--prune-categories", action="store_true",
        help="coco: drop categories no annotation uses (ids are renumbered 1..N either way)",
    )
    parser.add_argument("--patch", type=int, default=defaults.patch, help="raster: patch side (px)")
    parser.add_argument("--stride", type=int, help="raster: patch step in pixels (default --patch)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names, or a file of one name per line."""
    path = Path(text)
    if path.is_file():
        names = path.read_text(encoding="utf-8").splitlines()
    else:
        names = text.split(",")
    return tuple(name.strip() for name in names if name.strip())


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
            labels_dir=args.labels_dir,
            label_suffix=args.label_suffix,
            class_names=args.mask_classes or args.class_names,
            palette=args.palette,
            ignore_value=args.ignore_value,
            thing_classes=args.thing_classes,
            resize_masks=args.resize_masks,
            copy_images=args.copy_images,
            csv=args.csv,
            rle_order=args.rle_order,
            coco_file=args.coco_file,
            prune_categories=args.prune_categories,
            patch=args.patch,
            stride=args.stride,
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
    if "rle_order" in summary:
        lines.append(f"  RLE order: {summary['rle_order']} (from {summary['rle_order_from']})")
    if "pixel_mean" in summary:
        lines.append("  per-band statistics of the patches (paste into the config):")
        lines.append(f"    MODEL.PIXEL_MEAN: {_short_list(summary['pixel_mean'])}")
        lines.append(f"    MODEL.PIXEL_STD: {_short_list(summary['pixel_std'])}")
    report = summary["report"]
    if report:
        counts = ", ".join(f"{n} {action}" for action, n in sorted(report.items()))
        details = ConvertedLayout(output_dir).report_json
        lines.append(f"  problems: {counts} (details in {details})")
    else:
        lines.append("  problems: none")
    return "\n".join(lines)


def _short_list(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


if __name__ == "__main__":
    run_cli(main)
