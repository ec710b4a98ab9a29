#!/usr/bin/env python
"""Labelme → COCO: d2seg's ``convert_dataset`` against labelme2coco 0.2.6, in one process.

Generates ``--num-files`` synthetic Labelme balloon files (1–4 polygons each, no groups, so both
tools produce one annotation per shape), converts them with both tools, each writing its output
as it normally does, and prints (labelme2coco seconds / d2seg seconds, workers=1)::

    convert_speedup: X                  d2seg with all outputs
    convert_speedup_instances_only: Y   d2seg with --outputs instances

labelme2coco parses each JSON and writes one COCO json, taking ``area`` and ``bbox`` from the
polygon (shapely). d2seg also reads each image's header (size, EXIF orientation), copies the
image into ``OUT/images``, rasterises every shape to get labelme's exact pixel ``area``/``bbox``
and validates the json; with all outputs it also writes a semantic and a panoptic PNG per image
and the panoptic json. That work is inside its time; the instances-only line shows how much of
it is the two PNGs per image.

It then compares the annotations pairwise (same image, same order): areas as "exact matches /
max |Δ|" (pixel count vs polygon area), boxes as "within 1 px". ``--profile`` adds a cProfile of
d2seg's full-output side. d2seg gets ``labels.txt`` (its documented ``--labels`` usage),
labelme2coco collects names as it goes; each tool's fastest of ``--repeat`` runs counts, since
the machine may be shared.

A second row, Kaggle RLE (Airbus layout: 768×768 images, ``ImageId,EncodedPixels``, column-major
runs): ``--rle-objects`` ships (2 per image, random boxes and discs) in one CSV, converted by
``convert_dataset(fmt="kaggle-rle", outputs=("instances",))`` (reads each image's header,
hard-links it, writes and validates the COCO json) against the usual per-row loop of the
competition kernels: ``rle_decode`` (numpy slice assignment per run) then ``pycocotools``
``encode``/``area``/``toBbox`` for the COCO entry::

    rle_decode_convert_speedup: Z       rows → COCO RLE + area + bbox: per-row rle_decode +
                                        encode seconds / d2seg's kaggle_rle_to_coco seconds
    rle_decode_convert_vs_decode_only: W   the same against the decode loop alone (no COCO)
    rle_pipeline_speedup: V             the whole convert_dataset (images, json) against the
                                        per-row rle_decode + encode loop
"""

import argparse
import cProfile
import io
import json
import logging
import pstats
import tempfile
import time
from pathlib import Path

import labelme2coco
import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from d2seg.data.convert.from_kaggle_rle import kaggle_rle_to_coco
from d2seg.data.convert.pipeline import convert_dataset
from d2seg.data.convert.source import SourceOptions
from d2seg.data.synthetic import make_balloons


def best_time(call, repeat: int, profile: cProfile.Profile | None = None) -> float:
    """Fastest of ``repeat`` runs of ``call(run_index)`` in seconds (the machine may be shared)."""
    times = []
    for run in range(repeat):
        start = time.perf_counter()
        if profile is None or run > 0:
            call(run)
        else:
            profile.runcall(call, run)
        times.append(time.perf_counter() - start)
    # A profiled run is slower; keep it out of the timing when there are others.
    return min(times[1:] if profile is not None and repeat > 1 else times)


def annotations_by_image(coco: dict) -> dict[str, list[dict]]:
    """Annotations per image basename, in the order the tool wrote them."""
    names = {image["id"]: Path(image["file_name"]).name for image in coco["images"]}
    grouped: dict[str, list[dict]] = {name: [] for name in names.values()}
    for annotation in coco["annotations"]:
        grouped[names[annotation["image_id"]]].append(annotation)
    return grouped


def compare(d2seg_coco: dict, reference_coco: dict) -> None:
    """Print how d2seg's area/bbox compare with labelme2coco's, annotation by annotation."""
    ours, theirs = annotations_by_image(d2seg_coco), annotations_by_image(reference_coco)
    if ours.keys() != theirs.keys():
        print(f"images differ: {len(ours.keys() ^ theirs.keys())} only in one output")
    pairs = [(a, b) for name in sorted(ours.keys() & theirs.keys())
             for a, b in zip(ours[name], theirs[name])]
    unpaired = sum(abs(len(ours[n]) - len(theirs[n])) for n in ours.keys() & theirs.keys())
    area_d = np.array([a["area"] - b["area"] for a, b in pairs])
    rel_d = np.abs(area_d) / np.array([b["area"] for _, b in pairs])
    bbox_d = np.abs(np.array([a["bbox"] for a, _ in pairs], dtype=float)
                    - np.array([b["bbox"] for _, b in pairs], dtype=float))
    within_1px = int((bbox_d <= 1).all(axis=1).sum())
    print(f"annotations: d2seg {len(d2seg_coco['annotations'])}, labelme2coco "
          f"{len(reference_coco['annotations'])}, paired {len(pairs)}, unpaired {unpaired}")
    print(f"area exact matches: {int((area_d == 0).sum())}/{len(pairs)}; max |Δarea| "
          f"{np.abs(area_d).max():.2f} px² (max {100 * rel_d.max():.2f}%, mean d2seg - "
          f"labelme2coco {area_d.mean():+.2f} px²: pixel count vs polygon area)")
    print(f"bbox exact matches: {int((bbox_d == 0).all(axis=1).sum())}/{len(pairs)}; max |Δbbox| "
          f"{bbox_d.max():.2f} px; within 1 px: {within_1px}/{len(pairs)}")


def rle_decode(mask_rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The competition kernels' decoder: column-major runs → uint8 H×W (a transposed view)."""
    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    return img.reshape(shape).T


def airbus_csv(root: Path, num_objects: int, seed: int, size: int = 768) -> Path:
    """``root/images/*.png`` (blank 768×768) and ``root/train.csv`` with ``num_objects`` ships
    (2 per image: a box and a disc, random places and sizes), Airbus's layout."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    blank = Image.new("L", (size, size), 40)
    yy, xx = np.mgrid[:size, :size]
    rows = ["ImageId,EncodedPixels"]
    for i in range((num_objects + 1) // 2):
        name = f"{i:05d}.png"
        blank.save(root / "images" / name)
        for kind in ("box", "disc")[: min(2, num_objects - 2 * i)]:
            mask = np.zeros((size, size), bool)
            y, x = rng.integers(20, size - 80, 2)
            h, w = rng.integers(8, 60, 2)
            if kind == "box":
                mask[y : y + h, x : x + w] = True
            else:
                mask = (yy - y) ** 2 + (xx - x) ** 2 <= (h // 2) ** 2
            flat = np.concatenate([[0], mask.T.reshape(-1).astype(np.int8), [0]])
            runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
            runs[1::2] -= runs[::2]
            rows.append(f"{name},{' '.join(map(str, runs))}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root / "train.csv"


def csv_rows(csv_path: Path) -> list[str]:
    """The non-empty run-length strings of an ``ImageId,EncodedPixels`` CSV."""
    return [rle for _, rle in (line.split(",") for line in csv_path.read_text().splitlines()[1:])
            if rle]


def rle_reference(rows: list[str], encode: bool, size: int = 768) -> None:
    """The per-row loop: decode every row (and with ``encode`` make its COCO RLE, area, bbox)."""
    for rle in rows:
        mask = rle_decode(rle, (size, size))
        if encode:
            coco_rle = mask_util.encode(np.asfortranarray(mask))
            mask_util.area(coco_rle), mask_util.toBbox(coco_rle)


def rle_d2seg(rows: list[str], size: int = 768) -> None:
    """d2seg's row → COCO RLE, area, bbox (what the kaggle-rle source does per row)."""
    for rle in rows:
        coco_rle = kaggle_rle_to_coco(rle, size, size, "column")
        mask_util.area(coco_rle), mask_util.toBbox(coco_rle)


def bench_rle(root: Path, num_objects: int, seed: int, repeat: int) -> None:
    csv_path = airbus_csv(root / "airbus", num_objects, seed)
    options = SourceOptions(csv=str(csv_path))
    d2seg_s = best_time(lambda run: convert_dataset(
        root / "airbus" / "images", root / f"rle{run}", fmt="kaggle-rle", options=options,
        outputs=("instances",)), repeat)
    rows = csv_rows(csv_path)
    kernel_s = best_time(lambda run: rle_d2seg(rows), repeat)
    encode_s = best_time(lambda run: rle_reference(rows, encode=True), repeat)
    decode_s = best_time(lambda run: rle_reference(rows, encode=False), repeat)
    coco = json.loads((root / "rle0" / "annotations" / "all.json").read_text())
    print(f"Kaggle RLE, {len(coco['annotations'])} objects in {len(coco['images'])} images of "
          f"768x768: d2seg rows → COCO {kernel_s:.2f} s, whole convert_dataset {d2seg_s:.2f} s; "
          f"per-row rle_decode + encode {encode_s:.2f} s, rle_decode alone {decode_s:.2f} s")
    print(f"rle_decode_convert_speedup: {encode_s / kernel_s:.2f}")
    print(f"rle_decode_convert_vs_decode_only: {decode_s / kernel_s:.2f}")
    print(f"rle_pipeline_speedup: {encode_s / d2seg_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-files", type=int, default=1000)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the fastest counts")
    parser.add_argument("--profile", action="store_true", help="cProfile d2seg's first run")
    parser.add_argument("--rle-objects", type=int, default=10000,
                        help="ships in the Kaggle RLE row (0: skip it)")
    args = parser.parse_args()
    logging.getLogger("labelme2coco").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        labelme_dir = make_balloons(root / "labelme", args.num_files, size=tuple(args.size),
                                    seed=args.seed)
        num_shapes = sum(len(json.loads(p.read_text())["shapes"])
                         for p in labelme_dir.glob("*.json"))
        print(f"generated {args.num_files} Labelme files ({num_shapes} polygons, "
              f"{args.size[0]}x{args.size[1]} px) in {time.perf_counter() - start:.1f} s")

        profile = cProfile.Profile() if args.profile else None
        labels = labelme_dir / "labels.txt"  # d2seg's documented usage: --labels labels.txt
        d2seg_s = best_time(lambda run: convert_dataset(
            labelme_dir, root / f"d2seg{run}", labels_file=labels, workers=1), args.repeat, profile)
        instances_s = best_time(lambda run: convert_dataset(
            labelme_dir, root / f"instances{run}", labels_file=labels, workers=1,
            outputs=("instances",)), args.repeat)
        reference_s = best_time(
            lambda run: labelme2coco.convert(str(labelme_dir), str(root / f"l2c{run}")),
            args.repeat)
        for name, seconds in (("d2seg convert_dataset, all outputs", d2seg_s),
                              ("d2seg convert_dataset, outputs=instances", instances_s),
                              ("labelme2coco.convert", reference_s)):
            print(f"{name}: {seconds:.2f} s ({1000 * seconds / args.num_files:.2f} ms/file)")
        print(f"convert_speedup: {reference_s / d2seg_s:.2f}")
        print(f"convert_speedup_instances_only: {reference_s / instances_s:.2f}")
        compare(json.loads((root / "d2seg0" / "annotations" / "all.json").read_text()),
                json.loads((root / "l2c0" / "dataset.json").read_text()))
        if args.rle_objects:
            bench_rle(root, args.rle_objects, args.seed, args.repeat)
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
