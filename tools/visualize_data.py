#!/usr/bin/env python
"""Draw a dataset's ground truth, as annotated or as the training loader augments it.

    python tools/visualize_data.py --config-file F.yaml --source annotation --output-dir D
    python tools/visualize_data.py --dataset OUT/annotations/train.json --output-dir D
    python tools/visualize_data.py --config-file F.yaml --source dataloader --output-dir D \
        --limit 20

``annotation`` draws each image of ``DATASETS.TRAIN`` (or ``--dataset``: a registered name or a
converter's ``OUT/annotations/<split>.json``, no config needed) with its instances, semantic
map or panoptic segments; ``dataloader`` draws the training loader's augmented images and
targets (``--config-file`` needed: the augmentations are the config's). One PNG per image in
``--output-dir`` (``--show`` also opens each); ``--limit N`` and ``--ids 3 7`` select images.
"""

import argparse
import itertools
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from d2seg.config import get_cfg
from d2seg.data.build import build_detection_train_loader, get_detection_dataset_dicts
from d2seg.data.catalog import MetadataCatalog
from d2seg.data.datasets import resolve_dataset
from d2seg.data.io import read_image
from d2seg.errors import ConfigError
from d2seg.utils.cli import run_cli
from d2seg.utils.visualizer import Visualizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", help="a config (its DATASETS.TRAIN and augmentations)")
    parser.add_argument("--dataset", help="a registered dataset or OUT/annotations/<split>.json "
                        "(instead of DATASETS.TRAIN)")
    parser.add_argument("--source", choices=("annotation", "dataloader"), default="annotation")
    parser.add_argument("--output-dir", required=True, help="folder for the pictures")
    parser.add_argument("--show", action="store_true", help="also open each picture")
    parser.add_argument("--limit", type=int, default=None, help="draw at most N images")
    parser.add_argument("--ids", type=int, nargs="+", default=None, metavar="ID",
                        help="only these image ids")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return parser


def _config(args: argparse.Namespace):
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    elif args.source == "dataloader":
        raise ConfigError("--source dataloader needs --config-file (its augmentations); fix: add "
                          "--config-file F.yaml")
    cfg.merge_from_list(list(args.opts))
    if args.dataset:
        cfg.DATASETS.TRAIN = (args.dataset,)
    if not cfg.DATASETS.TRAIN:
        raise ConfigError("no dataset; fix: pass --dataset OUT/annotations/train.json or a "
                          "--config-file whose DATASETS.TRAIN names one")
    return cfg


def _annotated(cfg, ids: set[int] | None) -> Iterator[tuple[str, np.ndarray, Any]]:
    """(name, RGB image, dataset dict) of every dict of DATASETS.TRAIN."""
    for record in get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN), filter_empty=False):
        if ids is None or record.get("image_id") in ids:
            yield Path(record["file_name"]).stem, read_image(record["file_name"], "RGB"), record


def _loaded(cfg, ids: set[int] | None, count: int) -> Iterator[tuple[str, np.ndarray, Any]]:
    """(name, RGB image, mapped dict) of the training loader's first ``count`` images."""
    loader = build_detection_train_loader(cfg)
    seen = 0
    for batch in loader:
        for mapped in batch:
            seen += 1
            if ids is None or mapped.get("image_id") in ids:
                image = mapped["image"].permute(1, 2, 0).numpy()
                if cfg.INPUT.FORMAT == "BGR":
                    image = image[:, :, ::-1]
                yield f"{seen:05d}_{Path(mapped['file_name']).stem}", image, mapped
            if seen >= count:
                return


def _draw_mapped(vis: Visualizer, mapped: dict) -> Any:
    """The loader's targets: semantic labels, then instances (boxes, classes, masks)."""
    if "sem_seg" in mapped:
        vis.draw_sem_seg(mapped["sem_seg"])
    if "instances" in mapped:
        instances = mapped["instances"]
        vis.draw_instance_predictions({"boxes": instances["boxes"],
                                       "classes": instances["classes"],
                                       "masks": instances["masks"].bool()
                                       if "masks" in instances else None})
    return vis.output


def main() -> int:
    args = build_parser().parse_args()
    cfg = _config(args)
    ids = set(args.ids) if args.ids else None
    metadata = MetadataCatalog.get(resolve_dataset(cfg.DATASETS.TRAIN[0]))
    if args.source == "annotation":
        items = _annotated(cfg, ids)
    else:
        # One pass worth of images (the loader itself never ends).
        total = len(get_detection_dataset_dicts(list(cfg.DATASETS.TRAIN), filter_empty=False))
        items = _loaded(cfg, ids, total)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, image, record in itertools.islice(items, args.limit):
        vis = Visualizer(image, metadata)
        picture = vis.draw_dataset_dict(record) if args.source == "annotation" \
            else _draw_mapped(vis, record)
        picture.save(out / f"{name}.png")
        if args.show:
            Image.fromarray(picture.get_image()).show(title=name)
        written += 1
    if not written:
        raise ConfigError(f"no image selected (--ids {args.ids}); fix: give ids of the dataset")
    print(f"{written} picture(s) of {args.source} -> {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
