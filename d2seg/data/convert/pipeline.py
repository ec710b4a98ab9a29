"""``convert_dataset``: an annotation folder → COCO instances, semantic PNGs, COCO panoptic.

Output layout (all written into a temp folder that becomes ``output_dir`` only on success)::

    OUT/images/<file_name>              the images (``file_name`` is relative to it)
    OUT/annotations/<split>.json        "instances": COCO instances
    OUT/sem_seg/<split>/<stem>.png      "sem_seg": uint8, 0 background, 1..N classes, 255 ignore
    OUT/panoptic/<split>.json           "panoptic": COCO panoptic
    OUT/panoptic/<split>/<stem>.png     "panoptic": RGB segment ids
    OUT/report.json                     ConversionReport.to_json() + {"summary": ...}

``<split>`` is ``all`` without splits; ``<stem>`` is ``file_name`` without its suffix
(:func:`~d2seg.data.convert.writers.label_map_name`). ``outputs`` selects the quoted parts (all
by default); images and report are always written. Category ids are 1..N in labels-file order
(sorted names when collected from the data), the same in every split. With ``workers > 1``
items are converted in a process pool; each worker writes its image and PNGs and returns only
the light json entries, so the output equals that of ``workers=1``.
"""

import importlib
import json
import logging
import multiprocessing
import pkgutil
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

import d2seg.data.convert
from d2seg.data.coco import validate
from d2seg.data.convert.record import ConversionReport, ReportEntry
from d2seg.data.convert.source import AnnotationSource, SourceOptions
from d2seg.data.convert.split import split_items
from d2seg.data.convert.writers import (
    MAX_SEMANTIC_CATEGORIES,
    coco_json,
    instance_annotations,
    label_map_name,
    label_maps,
    write_image,
    write_png,
)
from d2seg.data.labelme import RESERVED_LABELS, read_labels_file
from d2seg.errors import ConfigError, DatasetError
from d2seg.utils.io import atomic_directory

logger = logging.getLogger(__name__)
_FORMAT_NAME = re.compile(r"[a-z][a-z0-9_]*")
OUTPUTS = ("instances", "sem_seg", "panoptic")


def available_formats() -> list[str]:
    """The ``--format`` names: modules ``d2seg.data.convert.from_<name>``."""
    return sorted(
        m.name[len("from_") :]
        for m in pkgutil.iter_modules(d2seg.data.convert.__path__)
        if m.name.startswith("from_")
    )


def source_class(fmt: str) -> type[AnnotationSource]:
    """The ``SOURCE`` class of ``d2seg.data.convert.from_<fmt>``; unknown names → ConfigError."""
    formats = available_formats()
    if not _FORMAT_NAME.fullmatch(fmt) or fmt not in formats:
        raise ConfigError(f"--format {fmt!r} is unknown; fix: choose one of {', '.join(formats)}")
    return importlib.import_module(f"d2seg.data.convert.from_{fmt}").SOURCE


@dataclass
class _ItemResult:
    """What a worker sends back for one item: json entries only, never pixels."""

    split: str
    image: dict | None  # {"file_name", "height", "width"}; None when the item was skipped
    annotations: list[dict] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)
    entries: list[ReportEntry] = field(default_factory=list)


class _ItemConverter:
    """Converts one item and writes its image, semantic PNG and panoptic PNG under ``out``."""

    def __init__(
        self,
        source: AnnotationSource,
        categories: list[str],
        out: Path,
        labels_file: str | Path | None,
        outputs: Collection[str],
    ):
        self.source = source
        self.category_ids = {name: i for i, name in enumerate(categories, start=1)}
        self.out = out
        self.outputs = outputs
        self.labels_origin = f"--labels {labels_file}" if labels_file else "the categories"

    def __call__(self, job: tuple[str, str]) -> _ItemResult:
        item, split = job
        report = ConversionReport()
        record = self.source.load(item, report)
        if record is None:
            return _ItemResult(split, None, entries=report.entries)
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
        write_image(record, self.out / "images")
        annotations = instance_annotations(record, self.category_ids)
        segments: list[dict] = []
        if "sem_seg" in self.outputs or "panoptic" in self.outputs:
            semantic, panoptic, segments = label_maps(record, annotations)
            png_name = label_map_name(record.file_name)
            if "sem_seg" in self.outputs:
                write_png(self.out / "sem_seg" / split / png_name, semantic)
            if "panoptic" in self.outputs:
                write_png(self.out / "panoptic" / split / png_name, panoptic)
        image = {"file_name": record.file_name, "height": record.height, "width": record.width}
        return _ItemResult(split, image, annotations, segments, report.entries)


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
    """Category names in id order: the labels file's, or every label used, sorted."""
    if labels_file is not None:
        if not Path(labels_file).is_file():
            raise ConfigError(f"--labels {labels_file}: file not found; fix: correct the path")
        categories = read_labels_file(labels_file)
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

    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    panoptic: list[dict] = field(default_factory=list)

    def add(self, result: _ItemResult) -> None:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, **result.image})
        for annotation in result.annotations:
            self.annotations.append(
                {"id": len(self.annotations) + 1, "image_id": image_id, **annotation}
            )
        self.panoptic.append(
            {
                "image_id": image_id,
                "file_name": label_map_name(result.image["file_name"]),
                "segments_info": result.segments,
            }
        )

    def write(
        self,
        tmp: Path,
        name: str,
        categories: list[str],
        output_dir: Path,
        outputs: Collection[str],
    ) -> dict:
        """Write the split's instances (validated) and panoptic json; returns its summary."""
        if "instances" in outputs:
            coco = coco_json(self.images, self.annotations, categories)
            validate(coco, str(output_dir / "annotations" / f"{name}.json"))
            _write_json(tmp / "annotations" / f"{name}.json", coco)
        if "panoptic" in outputs:
            panoptic = coco_json(self.images, self.panoptic, categories, panoptic=True)
            _write_json(tmp / "panoptic" / f"{name}.json", panoptic)
        with_objects = {a["image_id"] for a in self.annotations}
        return {
            "images": len(self.images),
            "annotations": len(self.annotations),
            "images_without_objects": len(self.images) - len(with_objects),
        }


def convert_dataset(
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    fmt: str = "labelme",
    labels_file: str | Path | None = None,
    splits: dict[str, float] | None = None,
    seed: int = 0,
    strict: bool = False,
    workers: int = 1,
    options: SourceOptions = SourceOptions(),
    outputs: Collection[str] = OUTPUTS,
) -> dict:
    """Convert an annotation folder; returns the summary (also saved in ``report.json``).

    ``outputs``: which of ``"instances"``, ``"sem_seg"``, ``"panoptic"`` to write (images and
    ``report.json`` always are); e.g. ``("instances",)`` for a Mask R-CNN dataset saves the time
    and disk of two PNGs per image.

    Summary: ``{"format", "outputs", "categories": [names in id order], "splits": {split: {"images",
    "annotations", "images_without_objects"}}, "skipped_files", "report": {action: count}}``.
    Raises DatasetError if ``output_dir`` exists, AnnotationError for unreadable input (and,
    with ``strict``, for any reported problem); nothing is written then.
    """
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise DatasetError(
            f"--output {output_dir} already exists; fix: choose a new --output or delete it"
        )
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
    source = source_class(fmt)(input_dir, options)
    report = ConversionReport(strict=strict)
    items = source.items(report)
    assignment = split_items(items, splits, seed)
    split_of = {item: name for name, names in assignment.items() for item in names}
    categories = collect_categories(source, items, labels_file, workers)

    with atomic_directory(output_dir) as tmp:
        convert = _ItemConverter(source, categories, tmp, labels_file, outputs)
        collected = {name: _SplitEntries() for name in assignment}  # empty splits too
        skipped = 0
        jobs = [(item, split_of[item]) for item in items]
        for result in _map(convert, jobs, workers, "converting"):
            report.entries.extend(result.entries)
            if result.image is None:
                skipped += 1
            else:
                collected[result.split].add(result)
        report.raise_if_strict()
        _check_unique_file_names(collected)
        summary_splits = {
            name: entries.write(tmp, name, categories, output_dir, outputs)
            for name, entries in collected.items()
        }
        report_json = report.to_json()
        summary = {
            "format": fmt,
            "outputs": list(outputs),
            "categories": categories,
            "splits": summary_splits,
            "skipped_files": skipped,
            "report": report_json["counts"],
        }
        _write_json(tmp / "report.json", {**report_json, "summary": summary})
    if report.entries:
        logger.warning(
            "%d problem(s) skipped, clipped or fixed (%s); each is listed in %s",
            len(report.entries),
            ", ".join(f"{n} {action}" for action, n in summary["report"].items()),
            output_dir / "report.json",
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
