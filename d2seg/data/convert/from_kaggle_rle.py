"""Kaggle run-length CSVs as an annotation source (``--format kaggle-rle``).

``--csv train.csv --images DIR``; the layout is recognised from the header:

=================================  ===============================  ============  ============
header                             competition                      class          RLE order
=================================  ===============================  ============  ============
``ImageId,EncodedPixels``          Airbus ship detection            ``ship``       column
``ImageId,ClassId,EncodedPixels``  Severstal steel defects          ClassId        column
``ImageId_ClassId,EncodedPixels``  Severstal (first release)        after ``_``    column
``img,rle_mask``                   Carvana                          ``car``        row
=================================  ===============================  ============  ============

``--mask-label`` renames the single class; ``--class-names a,b,c,d`` names ClassId 1, 2, ...
(the class is the ClassId itself otherwise). Each row with a run-length string is one instance,
so touching objects stay separate (unlike connected components); an empty string means no
object (the image still converts, without objects).

RLE: space-separated 1-indexed ``start length`` pairs over the image's pixels flattened
column-major (top to bottom, then left to right: Airbus, Severstal) or row-major (Carvana);
``--rle-order column|row`` overrides the header's default, and the summary says which was used.
Image sizes come from the images. Rows with an odd number of values, non-numbers, zero lengths,
runs past the image, or runs out of order or overlapping are reported with their CSV line and
skipped (an error with ``--strict``); images the CSV names that are not in ``--images`` are
reported as missing.

Column-major runs are COCO's own RLE order: they become a compressed COCO RLE without ever
being decoded to pixels (only the semantic and panoptic maps decode them).
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from d2seg.data.convert.label_images import image_size
from d2seg.data.convert.record import ConversionReport, ImageRecord, InstanceRecord
from d2seg.data.convert.source import AnnotationSource, SourceOptions
from d2seg.errors import AnnotationError, ConfigError, DatasetError


@dataclass(frozen=True)
class _Layout:
    """How one header is read: column indices, the default class and RLE order."""

    name: str
    image: int
    rle: int
    class_id: int | None  # column of the class id; -1: the part after the image id's last "_"
    label: str | None  # the single class, when there is no class id
    order: str


def _layout(header: list[str], where: str) -> _Layout:
    columns = [c.strip().lower() for c in header]
    index = {c: i for i, c in enumerate(columns)}
    if "img" in index and "rle_mask" in index:
        return _Layout("Carvana", index["img"], index["rle_mask"], None, "car", "row")
    if "imageid_classid" in index and "encodedpixels" in index:
        return _Layout(
            "Severstal", index["imageid_classid"], index["encodedpixels"], -1, None, "column"
        )
    if "imageid" in index and "encodedpixels" in index:
        if "classid" in index:
            return _Layout(
                "Severstal", index["imageid"], index["encodedpixels"], index["classid"], None,
                "column",
            )
        return _Layout("Airbus", index["imageid"], index["encodedpixels"], None, "ship", "column")
    raise AnnotationError(
        f"{where}: header {','.join(header)!r} is not a known Kaggle layout; fix: name the "
        f"columns ImageId,EncodedPixels (Airbus), ImageId,ClassId,EncodedPixels (Severstal) or "
        f"img,rle_mask (Carvana)"
    )


def _merge_touching(counts: np.ndarray) -> np.ndarray:
    """``counts`` with every zero gap between two runs removed (the runs joined)."""
    gaps, lengths = counts[0:-1:2], counts[1::2]
    first = np.flatnonzero(np.concatenate([[True], gaps[1:] != 0]))  # each joined run's first
    merged = np.empty(2 * first.size + 1, dtype=np.int64)
    merged[0:-1:2] = gaps[first]
    merged[1::2] = np.add.reduceat(lengths, first)
    merged[-1] = counts[-1]
    return merged


def rle_counts(text: str, height: int, width: int) -> np.ndarray:
    """The COCO-style alternating counts (0s, 1s, 0s, ..., int64) of a Kaggle RLE string of
    1-indexed ``start length`` pairs over ``height·width`` pixels, in the string's own pixel
    order; touching runs are merged, as ``pycocotools.mask.encode`` writes them. ValueError
    saying what is wrong: an odd count, a non-number, a start or length below 1, runs out of
    order or overlapping, a run past the image.

    Every check and the counts come from the same few array operations (the gaps between runs
    are the counts between the lengths), so a row costs about ten numpy calls.
    """
    try:
        # all numbers at once, 10x faster than np.array(text.split()); a token that is not an
        # integer is a ValueError
        values = np.fromstring(text, dtype=np.int64, sep=" ") if text.strip() else np.zeros(0, int)
    except ValueError:
        bad = next((v for v in text.split() if not v.lstrip("-").isdigit()), text)
        raise ValueError(f"{bad!r} is not a whole number") from None
    if values.size % 2:
        raise ValueError(f"{values.size} numbers: runs are 'start length' pairs (an even count)")
    if not values.size:
        return np.array([height * width], dtype=np.int64)
    if values.min() < 1:
        i = int(np.flatnonzero(values < 1)[0]) // 2
        raise ValueError(
            f"run {i + 1} is 'start {values[2 * i]} length {values[2 * i + 1]}': starts count "
            f"from 1 and lengths from 1"
        )
    counts = np.empty(values.size + 1, dtype=np.int64)
    counts[0] = values[0] - 1
    counts[1:-1:2] = values[1::2]
    # gap before run i = start_i - (start_{i-1} + length_{i-1})
    np.subtract(values[2::2], values[0:-2:2] + values[1:-2:2], out=counts[2:-1:2])
    end = int(values[-2] + values[-1] - 1)
    counts[-1] = height * width - end
    gaps = counts[2:-1:2]
    if gaps.size and gaps.min() <= 0:
        if gaps.min() < 0:
            i = int(np.flatnonzero(gaps < 0)[0]) + 1
            raise ValueError(
                f"run {i + 1} (start {values[2 * i]}) begins before run {i} ends: runs must be "
                f"sorted and must not overlap"
            )
        counts = _merge_touching(counts)
    if end > height * width:
        raise ValueError(
            f"run {values.size // 2} ends at pixel {end}, past the {width}×{height} image "
            f"({height * width} pixels)"
        )
    return counts


def kaggle_rle_to_coco(text: str, height: int, width: int, order: str) -> dict:
    """A compressed COCO RLE (pycocotools ``{"size", "counts": bytes}``) of one Kaggle RLE
    string (see :func:`rle_counts`; ValueError when broken).

    ``order="column"`` runs are COCO's own order: their counts are encoded as they are, never
    decoded to pixels. ``"row"`` runs are painted (``numpy.repeat`` of the counts) and
    re-encoded column-major.
    """
    counts = rle_counts(text, height, width)
    if order == "row":
        values = np.zeros(counts.size, dtype=np.uint8)
        values[1::2] = 1
        mask = np.repeat(values, counts).reshape(height, width)
        return mask_util.encode(np.asfortranarray(mask))
    if counts[-1] == 0:  # a mask ending in foreground: encode writes no empty last run
        counts = counts[:-1]
    return mask_util.frPyObjects(
        {"size": [height, width], "counts": counts.tolist()}, height, width
    )


@dataclass(frozen=True)
class _Row:
    line: int
    label: str
    rle: str


class KaggleRLESource(AnnotationSource):
    """One Kaggle CSV of run-length masks + the images folder (see the module docstring)."""

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        if options.csv is None:
            raise ConfigError("--format kaggle-rle needs the CSV; fix: pass --csv train.csv")
        self.csv_path = Path(options.csv)
        self._rows: dict[str, list[_Row]] | None = None
        self._layout: _Layout | None = None
        self._labels: list[str] = []

    @property
    def order(self) -> str:
        assert self._layout is not None
        return self.options.rle_order or self._layout.order

    def _read(self, report: ConversionReport) -> dict[str, list[_Row]]:
        if self._rows is not None:
            return self._rows
        if not self.csv_path.is_file():
            raise DatasetError(f"--csv {self.csv_path}: file not found; fix: correct the path")
        if not self.input_dir.is_dir():
            raise DatasetError(f"--images {self.input_dir} is not a folder; fix: pass the images")
        name = self.csv_path.name
        try:
            with open(self.csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise AnnotationError(f"{name}: the CSV is empty; fix: give the train CSV")
                layout = _layout(header, name)
                rows: dict[str, list[_Row]] = {}
                for fields in reader:
                    where = f"{name}: line {reader.line_num}"
                    if not fields:
                        continue
                    if len(fields) != len(header):
                        report.add(where, "skipped", f"{len(fields)} fields, the header has "
                                   f"{len(header)}")
                        continue
                    image, label = fields[layout.image].strip(), layout.label
                    if layout.class_id == -1:
                        image, _, class_id = image.rpartition("_")
                    elif layout.class_id is not None:
                        class_id = fields[layout.class_id].strip()
                    if label is None:
                        label = self._class_name(class_id, where, report)
                        if label is None:
                            continue
                    elif self.options.mask_label is not None:
                        label = self.options.mask_label
                    rows.setdefault(image, []).append(
                        _Row(reader.line_num, label, fields[layout.rle].strip())
                    )
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise AnnotationError(f"{name}: cannot read the CSV ({e}); fix: repair it") from e
        found = {}
        for image, image_rows in rows.items():
            if (self.input_dir / image).is_file():
                found[image] = image_rows
            else:
                report.add(image, "missing", f"named on {name} line {image_rows[0].line} but not "
                           f"in {self.input_dir}")
        if not found:
            raise DatasetError(
                f"{self.input_dir}: none of the {len(rows)} images named in {name} is there; fix: "
                f"pass the folder of the training images as --images"
            )
        self._layout, self._rows = layout, found
        self._labels = sorted({r.label for rs in found.values() for r in rs if r.rle})
        return found

    def _class_name(self, class_id: str, where: str, report: ConversionReport) -> str | None:
        names = self.options.class_names
        if names is None:
            if class_id.isdigit():
                return class_id
        elif class_id.isdigit() and 1 <= int(class_id) <= len(names):
            return names[int(class_id) - 1]
        known = f"1..{len(names)} (--class-names)" if names else "a whole number"
        report.add(where, "skipped", f"class id {class_id!r} is not {known}")
        return None

    def items(self, report: ConversionReport) -> list[str]:
        return sorted(self._read(report))

    def categories(self) -> list[str] | None:
        if self.options.class_names is not None:
            return list(self.options.class_names)
        self._read(ConversionReport())
        return self._labels or None

    def summary(self) -> dict:
        assert self._layout is not None
        how = "--rle-order" if self.options.rle_order else f"the {self._layout.name} header"
        return {"rle_order": self.order, "rle_order_from": how}

    def labels(self, item: str) -> list[str]:
        return sorted({row.label for row in self._read(ConversionReport())[item] if row.rle})

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        rows = self._read(report)[item]
        size = image_size(self.input_dir / item, item, self.csv_path.name, report)
        if size is None:
            return None
        height, width = size
        record = ImageRecord(
            source=item, file_name=item, height=height, width=width,
            image_path=self.input_dir / item,
        )
        for row in rows:
            if not row.rle:
                continue
            where = f"{self.csv_path.name}: line {row.line}"
            try:
                rle = kaggle_rle_to_coco(row.rle, height, width, self.order)
            except ValueError as e:
                report.add(where, "skipped", f"{item}: {e}")
                continue
            record.instances.append(InstanceRecord(row.label, None, None, where, rle=rle))
        return record


SOURCE = KaggleRLESource
