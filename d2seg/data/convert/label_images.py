"""Label images paired with images by stem: what ``semantic``, ``masks`` and ``raster`` share.

A label image holds one class value per pixel: the pixel value of a grayscale PNG (0/255 and
0/1 masks, class-index maps such as CamVid's or Cityscapes' ``labelIds``), the palette index of
a palette PNG/GIF, or, with a :class:`Palette` (``--palette classes.csv|json``), the row of its
RGB colour (CamVid's ``_L`` and VOC's colour PNGs). :class:`ValueClasses` says which class each
value is, which value is background and which is ignore.

Pairs: the image ``<dir>/<stem>.<any image suffix>`` under ``--images`` and the label image
``<dir>/<stem><label_suffix>.<png|gif|bmp|tif|tiff|npy>`` at the same relative place under the
labels folder. Unpaired files are reported (``missing``) and skipped; a label image whose size
differs from its image's is reported and skipped, or resized (nearest) with ``resize_masks``.
"""

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from d2seg.data.convert.record import ConversionReport, InstanceRecord
from d2seg.data.convert.source import AnnotationSource, SourceOptions
from d2seg.data.io import decode_image, exif_orientation, open_image
from d2seg.data.labelme import BACKGROUND_LABEL, IGNORE_LABEL
from d2seg.errors import AnnotationError, ConfigError, DatasetError
from d2seg.utils.polygons import outer_polygons

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
LABEL_SUFFIXES = (".png", ".gif", ".bmp", ".tif", ".tiff", ".npy")


@dataclass(frozen=True)
class Palette:
    """Class names and their RGB colours, in value order (row k = class value k).

    Read from a CSV ``name,r,g,b`` (a header row is skipped, as in CamVid's ``class_dict.csv``)
    or a JSON ``{"name": [r, g, b], ...}`` / ``[{"name": ..., "color": [r, g, b]}, ...]``.
    """

    names: tuple[str, ...]
    colors: np.ndarray  # int64 K×3

    @classmethod
    def read(cls, path: str | Path) -> "Palette":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--palette {path}: file not found; fix: correct the path")
        try:
            text = path.read_text(encoding="utf-8-sig")
            if path.suffix.lower() == ".json":
                raw = json.loads(text)
                if isinstance(raw, dict):
                    rows = raw.items()
                else:
                    rows = [(r["name"], r["color"]) for r in raw]
                rows = [(str(name), [int(v) for v in rgb]) for name, rgb in rows]
            else:
                rows = []
                for row in csv.reader(text.splitlines()):
                    if not row or (not rows and not row[1].strip().lstrip("-").isdigit()):
                        continue  # blank line or header
                    rows.append((row[0].strip(), [int(v) for v in row[1:4]]))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ConfigError(
                f"--palette {path}: cannot read it ({e!r}); fix: one 'name,r,g,b' row per class "
                f"(CSV) or {{\"name\": [r, g, b]}} (JSON)"
            ) from e
        colors = np.array([rgb for _, rgb in rows], dtype=np.int64).reshape(-1, 3)
        if not rows or len(rows[0][1]) != 3 or colors.min() < 0 or colors.max() > 255:
            raise ConfigError(
                f"--palette {path}: needs rows of a name and three 0-255 values; fix: e.g. "
                f"'Sky,128,128,128'"
            )
        if len({tuple(c) for c in colors.tolist()}) != len(rows):
            raise ConfigError(
                f"--palette {path}: two classes share a colour; fix: make them unique"
            )
        return cls(tuple(name for name, _ in rows), colors)

    def values(self, rgb: np.ndarray, where: str) -> np.ndarray:
        """int64 H×W class values of a uint8 H×W×3 colour image; an unknown colour is an
        AnnotationError naming ``where``, the colour and a pixel with it."""
        wide = rgb.astype(np.int64)
        keys = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
        table = (self.colors[:, 0] << 16) | (self.colors[:, 1] << 8) | self.colors[:, 2]
        order = np.argsort(table)
        position = np.searchsorted(table[order], keys).clip(0, len(table) - 1)
        found = table[order][position] == keys
        if not found.all():
            y, x = map(int, np.argwhere(~found)[0])
            raise AnnotationError(
                f"{where}: colour {tuple(int(v) for v in rgb[y, x])} at x={x}, y={y} is not in "
                f"the --palette; fix: add a row for it (or give --ignore-value to a row of that "
                f"colour)"
            )
        return order[position]


@dataclass(frozen=True)
class ValueClasses:
    """Label value → class name; ``_background_`` values are background, ``ignore`` is ignore.

    ``names[v]`` is the class of value ``v`` (from ``first``: masks' class ids start at 1, label
    maps' at 0). Values without a name and not ``ignore`` are an error in :meth:`check`.
    """

    names: dict[int, str]
    ignore: int | None = None

    @classmethod
    def from_options(
        cls, options: SourceOptions, first: int, palette: Palette | None
    ) -> "ValueClasses":
        names = options.class_names
        if names is None and palette is not None:
            names = palette.names
        if names is None:
            raise ConfigError(
                "no class names; fix: pass --class-names a,b,c (the class of values 0, 1, 2, "
                "...) or --palette classes.csv"
            )
        ignore = options.ignore_value
        mapping = {v: n for v, n in enumerate(names, start=first) if v != ignore}
        ignored = [v for v, n in mapping.items() if n == IGNORE_LABEL]
        if ignored and ignore is None:
            ignore = ignored[0]
        return cls({v: n for v, n in mapping.items() if n != IGNORE_LABEL}, ignore)

    @property
    def categories(self) -> list[str]:
        """The class names in value order, background excluded (the COCO categories)."""
        seen: list[str] = []
        for _, name in sorted(self.names.items()):
            if name != BACKGROUND_LABEL and name not in seen:
                seen.append(name)
        return seen

    def check(self, values: np.ndarray, where: str) -> None:
        present = set(np.unique(values).tolist()) - set(self.names) - {self.ignore, 0}
        if present:
            raise AnnotationError(
                f"{where}: label value(s) {sorted(present)} have no class; fix: name them in "
                f"--class-names (or --mask-classes), or mark one with --ignore-value"
            )


def read_label_values(path: Path, palette: Palette | None, where: str) -> np.ndarray:
    """The class value of every pixel of a label image as int64 H×W (see the module docs)."""
    suffix = path.suffix.lower()
    if suffix in (".npy", ".tif", ".tiff"):
        array = read_array(path, where, "label raster")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
    else:
        image = decode_image(
            open_image(path, where, "label image", error=AnnotationError),
            where, "label image", error=AnnotationError, exif=False,
        )
        if image.mode in ("P", "PA") and palette is None:
            array = np.asarray(image.convert("P") if image.mode == "PA" else image)
        elif image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L"):
            array = np.asarray(image)
        else:
            array = np.asarray(image.convert("RGB"))
    if array.ndim == 3:
        if palette is not None:
            return palette.values(array[..., :3].astype(np.uint8), where)
        if (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all():
            array = array[..., 0]
        else:
            raise AnnotationError(
                f"{where}: a colour-coded label image; fix: pass --palette classes.csv (name,r,g,b "
                f"per class) or save class ids as a grayscale PNG"
            )
    elif palette is not None:
        raise AnnotationError(
            f"{where}: a single-channel label image, but --palette expects colours; fix: drop "
            f"--palette for class-index images"
        )
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        if not np.array_equal(array, np.round(array)):
            raise AnnotationError(f"{where}: label values are not integers; fix: save class ids")
    return array.astype(np.int64)


def read_array(path: Path, where: str, what: str) -> np.ndarray:
    """A ``.npy`` or ``.tif`` array as stored (``tifffile``), AnnotationError when unreadable."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        import tifffile  # only rasters need it

        return tifffile.imread(path)
    except Exception as e:  # every decoder error means a bad file here
        raise AnnotationError(
            f"{where}: cannot read the {what} ({e}); fix: re-save it (numpy.save or tifffile)"
        ) from e


def fit_to_image(
    values: np.ndarray,
    height: int,
    width: int,
    options: SourceOptions,
    item: str,
    label_name: str,
    report: ConversionReport,
) -> np.ndarray | None:
    """``values`` at the image's size: unchanged, resized (nearest, with ``resize_masks``, and
    reported as fixed), or None (reported as skipped)."""
    if values.shape == (height, width):
        return values
    size = f"{label_name} is {values.shape[1]}×{values.shape[0]}, the image {width}×{height}"
    if not options.resize_masks:
        report.add(item, "skipped", f"{size}; fix: --resize-masks resizes it (nearest)")
        return None
    report.add(item, "fixed", f"{size}: resized (nearest)")
    # cv2 resizes int32 with nearest exactly; int64 it does not support.
    resized = cv2.resize(
        values.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST
    )
    return resized.astype(np.int64)


def image_size(
    image_path: Path, item: str, label_name: str, report: ConversionReport
) -> tuple[int, int] | None:
    """``(height, width)`` of an image whose labels follow its stored pixels; an image with an
    EXIF rotation is reported and skipped (None): unclear which pixels the labels follow."""
    image = open_image(image_path, str(image_path), error=AnnotationError)
    orientation = exif_orientation(image)
    if orientation != 1:
        report.add(
            item,
            "skipped",
            f"EXIF orientation {orientation}: unclear whether {label_name} follows the stored "
            f"or the rotated pixels; re-save the image without EXIF rotation",
        )
        return None
    width, height = image.size
    return height, width


def mask_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons of a bool mask that pycocotools fills back to exactly it
    (:func:`d2seg.utils.polygons.outer_polygons`), or None when RLE is needed: the mask has a
    hole, which a polygon list cannot express."""
    polygons, has_hole = outer_polygons(mask)
    return None if has_hole or not polygons else polygons


def component_instances(
    label: str,
    foreground: np.ndarray,
    where: str,
    item: str,
    options: SourceOptions,
    report: ConversionReport,
) -> list[InstanceRecord]:
    """Instances of a bool H×W ``foreground`` of class ``label``: one per 8-connected
    component (``mask_instances="components"``) or one for all (``"single"``); components
    smaller than ``mask_min_area`` pixels are dropped and reported. Polygons from
    :func:`mask_polygons`."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        foreground.astype(np.uint8), connectivity=8
    )
    kept = []
    for component in range(1, count):
        area = int(stats[component, cv2.CC_STAT_AREA])
        if area < options.mask_min_area:
            x, y = stats[component, cv2.CC_STAT_LEFT], stats[component, cv2.CC_STAT_TOP]
            report.add(
                item,
                "skipped",
                f"{where}: a component of {area} px at x={x}, y={y} is smaller than "
                f"mask_min_area={options.mask_min_area}",
            )
            continue
        kept.append(component)
    if not kept:
        return []
    if options.mask_instances == "single":
        groups = [(np.isin(labels, kept), where)]
    else:
        groups = [(labels == c, f"{where}: component {i}") for i, c in enumerate(kept)]
    return [
        InstanceRecord(label=label, mask=mask, polygons=mask_polygons(mask), source=source)
        for mask, source in groups
    ]


def label_map_instances(
    values: np.ndarray,
    classes: ValueClasses,
    label_name: str,
    item: str,
    options: SourceOptions,
    report: ConversionReport,
) -> list[InstanceRecord]:
    """The instances of a label map (int H×W of label values): one stuff region per class
    present, or, for ``options.thing_classes``, one instance per connected component (see
    :func:`component_instances`). Background and ignore values give none."""
    instances: list[InstanceRecord] = []
    for value in np.unique(values).tolist():
        name = classes.names.get(value)
        if name is None or name == BACKGROUND_LABEL:
            continue
        region = values == value
        where = f"{label_name}: {name}"
        if name in options.thing_classes:
            instances += component_instances(name, region, where, item, options, report)
        else:
            instances.append(InstanceRecord(name, region, None, where, isthing=False))
    return instances


def ignore_region(values: np.ndarray, classes: ValueClasses) -> np.ndarray | None:
    """Bool H×W of the ignore value's pixels, or None when there are none."""
    if classes.ignore is None:
        return None
    ignore = values == classes.ignore
    return ignore if ignore.any() else None


class PairedLabelSource(AnnotationSource):
    """Images under ``input_dir`` paired with label images under ``options.labels_dir`` (see
    the module docstring); subclasses turn the label values into instances."""

    image_suffixes = IMAGE_SUFFIXES
    format_name = "semantic"  # for messages

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        self.labels_dir = Path(options.labels_dir) if options.labels_dir else None
        self.palette = Palette.read(options.palette) if options.palette else None
        self._pairs: dict[str, Path] | None = None

    def stuff_categories(self) -> frozenset[str]:
        """Every class not in ``--thing-classes`` (see :func:`label_map_instances`)."""
        return frozenset(self.categories()) - set(self.options.thing_classes)

    def pairs(self, report: ConversionReport | None = None) -> dict[str, Path]:
        """Item (image path relative to ``input_dir``) → its label image."""
        if self._pairs is not None:
            return self._pairs
        report = report if report is not None else ConversionReport()
        if self.labels_dir is None:
            raise ConfigError(
                f"--format {self.format_name} needs the label images' folder; fix: pass "
                f"--labels-dir DIR (or --masks DIR)"
            )
        if not self.labels_dir.is_dir():
            raise DatasetError(
                f"--labels-dir {self.labels_dir} is not a folder; fix: pass the folder of the "
                f"label images"
            )
        images = [
            p for p in self.input_files("*", "the images")
            if p.suffix.lower() in self.image_suffixes
            and not (self.labels_dir.resolve() in p.resolve().parents)
        ]
        suffix = self.options.label_suffix
        labels: dict[str, list[Path]] = {}
        for folder, _, files in _walk(self.labels_dir):
            for name in files:
                path = Path(folder, name)
                stem = path.stem
                if path.suffix.lower() in LABEL_SUFFIXES and stem.endswith(suffix):
                    image_stem = stem[: len(stem) - len(suffix)] if suffix else stem
                    key = path.relative_to(self.labels_dir).with_name(image_stem)
                    labels.setdefault(key.as_posix(), []).append(path)
        pairs: dict[str, Path] = {}
        used: set[str] = set()
        for image in images:
            relative = image.relative_to(self.input_dir)
            key = relative.with_suffix("").as_posix()
            found = labels.get(key, [])
            if len(found) != 1:
                reason = f"ambiguous: {[p.name for p in found]}" if found else (
                    f"no {key}{suffix}.png (or .gif/.tif/.npy) in {self.labels_dir}"
                )
                report.add(relative.as_posix(), "missing", f"no label image ({reason})")
                continue
            pairs[relative.as_posix()] = found[0]
            used.add(key)
        for key, paths in labels.items():
            if key not in used:
                for path in paths:
                    report.add(str(path), "missing", "no image for this label image")
        if not pairs:
            raise DatasetError(
                f"{self.input_dir}: no image has a label image in {self.labels_dir} named "
                f"<stem>{suffix}.png ({len(images)} image(s), {sum(map(len, labels.values()))} "
                f"label file(s)); fix: check --labels-dir and --label-suffix"
            )
        self._pairs = pairs
        return pairs

    def items(self, report: ConversionReport) -> list[str]:
        return sorted(self.pairs(report))

    def label_name(self, item: str) -> str:
        """The item's label image as named in messages."""
        return str(self.pairs()[item])

    def read_values(self, item: str) -> np.ndarray:
        """The item's label values (int64 or bool H×W), see :func:`read_label_values`."""
        return read_label_values(self.pairs()[item], self.palette, self.label_name(item))

    def label_values(
        self, item: str, report: ConversionReport
    ) -> tuple[np.ndarray, int, int] | None:
        """``(values, height, width)`` of an item's label image fitted to its image, or None
        when the item is skipped (reported)."""
        label_name = self.label_name(item)
        size = image_size(self.input_dir / item, item, label_name, report)
        if size is None:
            return None
        values = fit_to_image(self.read_values(item), *size, self.options, item, label_name, report)
        return None if values is None else (values, *size)


def _walk(root: Path):
    """``os.walk`` without hidden files and folders."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        yield folder, subfolders, [name for name in files if not name.startswith(".")]
