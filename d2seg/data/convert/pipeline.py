"""``convert_dataset``: an annotation folder → COCO instances, semantic PNGs, COCO panoptic.

Everything is written into a temp folder that becomes ``output_dir`` only on success, in the
layout of :class:`~d2seg.data.convert.layout.ConvertedLayout`: the images, per split the COCO
instances json ("instances"), the semantic PNGs ("sem_seg") and the COCO panoptic json + PNGs
("panoptic"), and ``report.json`` (``ConversionReport.to_json()`` + ``{"summary": ...}``).
The split is ``all`` without splits. ``outputs`` selects the quoted parts (all by default);
images and report are always written. Category ids are 1..N in labels-file order (sorted names
when collected from the data), the same in every split.

Splits are drawn from the items that converted (skipped ones take no share of the fractions):
items are converted first, their label PNGs written to a staging folder, and moved into their
split's folders once the split is known. With ``workers > 1`` items are converted in a process
pool; each worker writes its image and PNGs and returns only the light json entries, so the
output equals that of ``workers=1``.
"""

import importlib
import json
import logging
import multiprocessing
import os
import pkgutil
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

import d2seg.data.convert
from d2seg.data.coco import validate
from d2seg.data.convert.layout import ConvertedLayout
from d2seg.data.convert.record import ConversionReport, ReportEntry
from d2seg.data.convert.source import AnnotationSource, SourceOptions
from d2seg.data.convert.split import check_splits, item_groups, split_items
from d2seg.data.convert.writers import (
    MAX_SEMANTIC_CATEGORIES,
    coco_json,
    instance_annotations,
    label_maps,
    write_image,
    write_png,
)
from d2seg.data.labelme import RESERVED_LABELS, read_labels_file
from d2seg.errors import ConfigError, DatasetError
from d2seg.utils.io import atomic_directory

logger = logging.getLogger(__name__)
_FORMAT_NAME = re.compile(r"[a-z][a-z0-9-]*")
OUTPUTS = ("instances", "sem_seg", "panoptic")
# Label PNGs wait here until the split is drawn; the dot keeps it apart from every split name.
_STAGING = ".unsplit"


def available_formats() -> list[str]:
    """The ``--format`` names: modules ``d2seg.data.convert.from_<name>`` ("-" for "_")."""
    return sorted(
        m.name[len("from_") :].replace("_", "-")
        for m in pkgutil.iter_modules(d2seg.data.convert.__path__)
        if m.name.startswith("from_")
    )


def source_class(fmt: str) -> type[AnnotationSource]:
    """The ``SOURCE`` class of ``d2seg.data.convert.from_<fmt>``; unknown names → ConfigError."""
    formats = available_formats()
    if not _FORMAT_NAME.fullmatch(fmt) or fmt not in formats:
        raise ConfigError(f"--format {fmt!r} is unknown; fix: choose one of {', '.join(formats)}")
    return importlib.import_module(f"d2seg.data.convert.from_{fmt.replace('-', '_')}").SOURCE


@dataclass
class _ItemResult:
    """What a worker sends back for one item: json entries only, never pixels."""

    item: str
    image: dict | None  # {"file_name", "height", "width"}; None when the item was skipped
    annotations: list[dict] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    entries: list[ReportEntry] = field(default_factory=list)


class _ItemConverter:
    """Converts one item and writes its image, and its semantic and panoptic PNGs (into the
    staging split), under ``layout``."""

    def __init__(
        self,
        source: AnnotationSource,
        categories: list[str],
        layout: ConvertedLayout,
        labels_file: str | Path | None,
        outputs: Collection[str],
    ):
        self.source = source
        self.category_ids = {name: i for i, name in enumerate(categories, start=1)}
        self.layout = layout
        self.outputs = outputs
        self.labels_origin = f"--labels {labels_file}" if labels_file else "the categories"

    def __call__(self, item: str) -> _ItemResult:
        report = ConversionReport()
        record = self.source.load(item, report)
        if record is None:
            return _ItemResult(item, None, entries=report.entries)
        kept = []
        for instance in record.instances:
            if instance.label in self.category_ids:
                kept.append(instance)
            else:
                report.add(
                    instance.source,
                    "skipped",
                    f"label '{instance.label}' is not in {self.labels_origin}; fix: add it there "
                    f"or relabel the shape",
                )
        record.instances = kept
        write_image(record, self.layout.images_dir, copy=self.source.options.copy_images)
        annotations = instance_annotations(record, self.category_ids)
        segments: list[dict] = []
        if "sem_seg" in self.outputs or "panoptic" in self.outputs:
            semantic, panoptic, segments = label_maps(record, annotations)
            png_name = self.layout.label_map_name(record.file_name)
            if "sem_seg" in self.outputs:
                write_png(self.layout.sem_seg_dir(_STAGING) / png_name, semantic)
            if "panoptic" in self.outputs:
                write_png(self.layout.panoptic_dir(_STAGING) / png_name, panoptic)
        things = [a for a, i in zip(annotations, record.instances) if i.isthing]
        image = {"file_name": record.file_name, "height": record.height, "width": record.width}
        return _ItemResult(item, image, things, segments, report.entries)


def _move_label_maps(layout: ConvertedLayout, file_name: str, split: str) -> None:
    """Move an image's staged label PNGs (those written) into ``split``'s folders."""
    png_name = layout.label_map_name(file_name)
    for folder in (layout.sem_seg_dir, layout.panoptic_dir):
        staged = folder(_STAGING) / png_name
        if staged.is_file():
            target = folder(split) / png_name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)


_WORKER_CALL = None


def _init_worker(call) -> None:
    global _WORKER_CALL
    _WORKER_CALL = call


def _call_in_worker(job):
    return _WORKER_CALL(job)


def _map(call, jobs: list, workers: int, desc: str):
    """``call`` over ``jobs`` in order, in ``workers`` processes, with a progress bar."""
    bar = dict(total=len(jobs), desc=desc, unit="file", disable=None, leave=False)
    if workers <= 1 or len(jobs) <= 1:
        yield from tqdm(map(call, jobs), **bar)
        return
    chunksize = max(1, min(16, len(jobs) // (4 * workers)))
    with multiprocessing.Pool(workers, initializer=_init_worker, initargs=(call,)) as pool:
        yield from tqdm(pool.imap(_call_in_worker, jobs, chunksize=chunksize), **bar)


def collect_categories(
    source: AnnotationSource, items: list[str], labels_file: str | Path | None, workers: int
) -> list[str]:
    """Category names in id order: the labels file's, the source's own (class names, a COCO
    file's categories), or every label used, sorted."""
    if labels_file is not None:
        if not Path(labels_file).is_file():
            raise ConfigError(f"--labels {labels_file}: file not found; fix: correct the path")
        categories = read_labels_file(labels_file)
    elif source.categories() is not None:
        categories = source.categories()
    else:
        used: set[str] = set()
        for labels in _map(source.labels, items, workers, "collecting labels"):
            used.update(labels)
        categories = sorted(used - set(RESERVED_LABELS))
        if not categories:
            raise DatasetError(
                f"{source.input_dir}: no labelled objects found, so there are no categories; fix: "
                f"annotate some objects or pass --labels labels.txt"
            )
    if len(categories) > MAX_SEMANTIC_CATEGORIES:
        raise DatasetError(
            f"{len(categories)} categories do not fit uint8 semantic maps (at most "
            f"{MAX_SEMANTIC_CATEGORIES}); fix: merge classes in the labels file"
        )
    return categories


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps runs the C encoder on the whole tree; json.dump to a file would not.
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


@dataclass
class _SplitEntries:
    """The json entries of one split, with ids 1, 2, ... in item order."""

    items: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    panoptic: list[dict] = field(default_factory=list)

    def add(self, result: _ItemResult) -> None:
        self.items.append(result.item)
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, **result.image})
        for annotation in result.annotations:
            self.annotations.append(
                {"id": len(self.annotations) + 1, "image_id": image_id, **annotation}
            )
        self.panoptic.append(
            {
                "image_id": image_id,
                "file_name": ConvertedLayout.label_map_name(result.image["file_name"]),
                "segments_info": result.segments,
            }
        )

    def write(
        self,
        tmp: ConvertedLayout,
        name: str,
        categories: list[str],
        stuff: Collection[str],
        output: ConvertedLayout,
        outputs: Collection[str],
    ) -> dict:
        """Write the split's instances (validated) and panoptic json into ``tmp`` (``output``
        names the files in messages); returns its summary."""
        if "instances" in outputs:
            coco = coco_json(self.images, self.annotations, categories, stuff=stuff)
            validate(coco, str(output.annotations_json(name)))
            _write_json(tmp.annotations_json(name), coco)
        if "panoptic" in outputs:
            panoptic = coco_json(self.images, self.panoptic, categories, stuff=stuff,
                                 panoptic=True)
            _write_json(tmp.panoptic_json(name), panoptic)
        with_objects = {a["image_id"] for a in self.annotations}
        return {
            "images": len(self.images),
            "annotations": len(self.annotations),
            "images_without_objects": len(self.images) - len(with_objects),
        }


def _draw_splits(
    tmp: ConvertedLayout,
    converted: list[_ItemResult],
    splits: dict[str, float] | None,
    seed: int,
    groups: dict[str, str] | None,
) -> dict[str, _SplitEntries]:
    """Split the converted items (see :func:`split_items`) and move their staged label PNGs
    into their split's folders; returns split → its entries (empty splits too)."""
    kept = [result.item for result in converted]
    assignment = split_items(kept, splits, seed, [groups[i] for i in kept] if groups else None)
    split_of = {item: name for name, names in assignment.items() for item in names}
    collected = {name: _SplitEntries() for name in assignment}
    label_maps_written = tmp.sem_seg_dir(_STAGING).is_dir() or tmp.panoptic_dir(_STAGING).is_dir()
    for result in converted:
        collected[split_of[result.item]].add(result)
        if label_maps_written:
            _move_label_maps(tmp, result.image["file_name"], split_of[result.item])
    for folder in (tmp.sem_seg_dir(_STAGING), tmp.panoptic_dir(_STAGING)):
        shutil.rmtree(folder, ignore_errors=True)
    return collected


def convert_dataset(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    fmt: str = "labelme",
    labels_file: str | Path | None = None,
    splits: dict[str, float] | None = None,
    seed: int = 0,
    group_by: str | None = None,
    strict: bool = False,
    workers: int = 1,
    options: SourceOptions = SourceOptions(),
    outputs: Collection[str] = OUTPUTS,
) -> dict:
    """Convert an annotation folder; returns the summary (also saved in ``report.json``).

    ``splits`` (e.g. ``{"val": 0.2}``, the rest to ``train``) are drawn with ``seed`` among the
    items that converted; with ``group_by`` (a regular expression, see
    :mod:`d2seg.data.convert.split`) whole groups of items go to one split. ``outputs``: which
    of ``"instances"``, ``"sem_seg"``, ``"panoptic"`` to write (images and ``report.json``
    always are); e.g. ``("instances",)`` for a Mask R-CNN dataset saves the time and disk of
    two PNGs per image.

    Summary: ``{"format", "outputs", "categories": [names in id order],
    "stuff_categories": [those drawn as stuff, see AnnotationSource.stuff_categories], "splits": {split: {"images",
    "annotations", "images_without_objects"[, "groups"]}}, "skipped_files", "report": {action:
    count}}`` (``groups``: the number of groups, with ``group_by``). Raises DatasetError if
    ``output_dir`` exists, ConfigError for bad options (an item ``group_by`` does not match),
    AnnotationError for unreadable input (and, with ``strict``, for any reported problem);
    nothing is written then.
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1; fix: e.g. --workers 4")
    outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    unknown = [name for name in outputs if name not in OUTPUTS]
    if unknown or not outputs:
        problem = f"unknown {', '.join(unknown)}" if unknown else "nothing selected"
        raise ConfigError(
            f"--outputs {','.join(outputs)}: {problem}; fix: give a comma-separated subset of "
            f"{','.join(OUTPUTS)}"
        )
    if splits:
        check_splits(splits)  # now, not after converting everything
    output = ConvertedLayout(output_dir)
    with atomic_directory(output_dir, what="--output") as tmp_dir:
        source = source_class(fmt)(input_dir, options)
        report = ConversionReport(strict=strict)
        items = source.items(report)
        groups = dict(zip(items, item_groups(items, group_by))) if group_by else None
        categories = collect_categories(source, items, labels_file, workers)
        stuff = source.stuff_categories() & set(categories)
        tmp = ConvertedLayout(tmp_dir)
        convert = _ItemConverter(source, categories, tmp, labels_file, outputs)
        converted = []
        for result in _map(convert, items, workers, "converting"):
            report.entries.extend(result.entries)
            if result.image is not None:
                converted.append(result)
        report.raise_if_strict()
        collected = _draw_splits(tmp, converted, splits, seed, groups)
        _check_unique_file_names(collected)
        summary_splits = {}
        for name, entries in collected.items():
            summary_splits[name] = entries.write(tmp, name, categories, stuff, output, outputs)
            if groups:
                summary_splits[name]["groups"] = len({groups[item] for item in entries.items})
        report_json = report.to_json()
        summary = {
            "format": fmt,
            **source.summary(),
            "outputs": list(outputs),
            "categories": categories,
            "stuff_categories": [c for c in categories if c in stuff],
            "splits": summary_splits,
            "skipped_files": len(items) - len(converted),
            "report": report_json["counts"],
        }
        _write_json(tmp.report_json, {**report_json, "summary": summary})
    if report.entries:
        logger.warning(
            "%d problem(s) skipped, clipped or fixed (%s); each is listed in %s",
            len(report.entries),
            ", ".join(f"{n} {action}" for action, n in summary["report"].items()),
            output.report_json,
        )
    return summary


def _check_unique_file_names(collected: dict[str, "_SplitEntries"]) -> None:
    seen: set[str] = set()
    for entries in collected.values():
        for image in entries.images:
            if image["file_name"] in seen:
                raise DatasetError(
                    f"two annotation files both give the output image {image['file_name']}; fix: "
                    f"rename one of them"
                )
            seen.add(image["file_name"])
