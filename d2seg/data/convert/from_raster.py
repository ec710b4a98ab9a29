"""Multi-band scenes + label rasters as an annotation source (``--format raster``).

``--images DIR --labels-dir DIR [--label-suffix S] --class-names a,b,c [--ignore-value V]
[--patch 256 --stride 256]``: each scene ``<stem>.tif|.tiff|.npy`` (read by ``tifffile`` /
``numpy``; H×W×B or B×H×W, uint8, uint16 or float) is paired with the label raster
``<stem><S>.tif|.npy|.png`` of class values (H×W), as :mod:`~d2seg.data.convert.from_semantic`
pairs label maps: value ``v`` is ``class_names[v]``, ``--ignore-value`` → 255, a class named
``_background_`` → 0; ``--thing-classes`` also make instances.

The band axis is the one the label raster's H×W does not explain. Scenes are cut into
``patch``×``patch`` patches every ``stride`` pixels; the last row and column of patches are
aligned to the scene's far edges, so the patches cover the whole scene (they overlap there).
Patches whose labels are all ignore are dropped (counted in the summary). Each patch is an item
``<stem>_y<Y>_x<X>.npy`` (its top-left corner in the scene): uint8 scenes give uint8 patches,
every other dtype float32 patches (the values as stored), read by
:func:`d2seg.data.io.read_image` for ``INPUT.FORMAT "N"`` models.

The summary has the per-band mean and standard deviation over the kept patches' pixels (each
scene pixel counted once), in the patches' units: ``MODEL.PIXEL_MEAN``/``PIXEL_STD``.
"""

from pathlib import Path

import numpy as np

from d2seg.data.convert.label_images import (
    PairedLabelSource,
    ValueClasses,
    fit_to_image,
    ignore_region,
    label_map_instances,
    read_array,
    read_label_values,
)
from d2seg.data.convert.record import ConversionReport, ImageRecord
from d2seg.data.convert.source import SourceOptions
from d2seg.errors import AnnotationError, ConfigError, DatasetError

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".npy"})


def patch_origins(size: int, patch: int, stride: int) -> list[int]:
    """Patch starts along one axis of ``size`` pixels: every ``stride``, and the last flush
    with the far edge (so the patches cover ``0..size``); ``size >= patch``."""
    origins = list(range(0, size - patch + 1, stride))
    if origins[-1] + patch < size:
        origins.append(size - patch)
    return origins


def bands_last(scene: np.ndarray, height: int | None, width: int | None) -> np.ndarray:
    """``scene`` as H×W×B: 2-D is one band; the band axis is the one that is not ``height``
    ×``width`` (the label raster's), else the smallest axis."""
    if scene.ndim == 2:
        return scene[:, :, None]
    if scene.ndim != 3:
        raise ValueError(f"an array of shape {scene.shape}; expected H×W×bands or bands×H×W")
    if scene.shape[:2] == (height, width):
        return scene
    if scene.shape[1:] == (height, width) or int(np.argmin(scene.shape)) == 0:
        return np.moveaxis(scene, 0, -1)
    return scene


class RasterPatchSource(PairedLabelSource):
    """Scenes cut into patches (see the module docstring)."""

    image_suffixes = RASTER_SUFFIXES
    format_name = "raster"

    def __init__(self, input_dir: str | Path, options: SourceOptions = SourceOptions()):
        super().__init__(input_dir, options)
        self.classes = ValueClasses.from_options(options, 0, self.palette)
        self.patch = options.patch
        self.stride = options.stride or options.patch
        if self.patch < 1 or self.stride < 1:
            raise ConfigError(
                f"--patch {self.patch} --stride {self.stride}: both must be at least 1; fix: "
                f"e.g. --patch 256 --stride 256"
            )
        self._patches: dict[str, tuple[str, int, int]] = {}
        self._summary: dict = {}
        self._scene: tuple[str, np.ndarray, np.ndarray] | None = None

    def _read_scene(
        self, scene_item: str, report: ConversionReport
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(H×W×B scene, int64 H×W label values)`` of a pair, or None (reported skip)."""
        if self._scene is not None and self._scene[0] == scene_item:
            return self._scene[1], self._scene[2]
        path = self.input_dir / scene_item
        label_name = self.label_name(scene_item)
        values = read_label_values(self.pairs()[scene_item], self.palette, label_name)
        try:
            scene = bands_last(read_array(path, str(path), "scene"), *values.shape)
        except ValueError as e:
            raise AnnotationError(f"{path}: {e}; fix: save the scene as H×W×bands") from e
        if not (np.issubdtype(scene.dtype, np.integer) or np.issubdtype(scene.dtype, np.floating)):
            raise AnnotationError(
                f"{path}: {scene.dtype} bands; fix: save uint8, uint16 or float32"
            )
        values = fit_to_image(
            values, *scene.shape[:2], self.options, scene_item, label_name, report
        )
        if values is None:
            return None
        self.classes.check(values, label_name)
        self._scene = (scene_item, scene, values)
        return scene, values

    def items(self, report: ConversionReport) -> list[str]:
        bands = None
        sums = squares = None
        count = dropped = 0
        for scene_item in sorted(self.pairs(report)):
            read = self._read_scene(scene_item, report)
            if read is None:
                continue
            scene, values = read
            height, width = values.shape
            if height < self.patch or width < self.patch:
                report.add(scene_item, "skipped", f"{width}×{height} is smaller than --patch "
                           f"{self.patch}; fix: a smaller --patch")
                continue
            if bands is not None and scene.shape[2] != bands:
                raise AnnotationError(
                    f"{self.input_dir / scene_item}: {scene.shape[2]} bands, the scenes before "
                    f"it {bands}; fix: give every scene the same bands"
                )
            bands = scene.shape[2]
            ignore = ignore_region(values, self.classes)
            covered = np.zeros((height, width), dtype=bool)
            stem = Path(scene_item).with_suffix("").as_posix()
            for y in patch_origins(height, self.patch, self.stride):
                for x in patch_origins(width, self.patch, self.stride):
                    window = (slice(y, y + self.patch), slice(x, x + self.patch))
                    if ignore is not None and ignore[window].all():
                        dropped += 1
                        continue
                    covered[window] = True
                    self._patches[f"{stem}_y{y:05d}_x{x:05d}.npy"] = (scene_item, y, x)
            count += int(covered.sum())
            band_sums = np.empty(bands)
            band_squares = np.empty(bands)
            for b in range(bands):
                pixels = np.asarray(scene[:, :, b], dtype=np.float64)[covered]
                band_sums[b], band_squares[b] = pixels.sum(), np.square(pixels).sum()
            sums = band_sums if sums is None else sums + band_sums
            squares = band_squares if squares is None else squares + band_squares
        self._scene = None  # workers read their own scenes; keep the pickled source light
        if not self._patches:
            why = "; ".join(str(e) for e in report.entries[:3]) or "every patch is all ignore"
            raise DatasetError(
                f"{self.input_dir}: no patch to write ({why}); fix: check the scenes' sizes "
                f"against --patch {self.patch} and --ignore-value"
            )
        if count:
            mean = sums / count
            std = np.sqrt(np.maximum(squares / count - mean**2, 0))
            self._summary = {
                "patch": self.patch, "stride": self.stride, "bands": bands,
                "patches_all_ignore": dropped,
                "pixel_mean": [round(float(v), 6) for v in mean],
                "pixel_std": [round(float(v), 6) for v in std],
            }
        return sorted(self._patches)

    def summary(self) -> dict:
        return self._summary

    def categories(self) -> list[str]:
        return self.classes.categories

    def labels(self, item: str) -> list[str]:
        return self.classes.categories

    def load(self, item: str, report: ConversionReport) -> ImageRecord | None:
        scene_item, y, x = self._patches[item]
        scene, values = self._read_scene(scene_item, report)
        window = (slice(y, y + self.patch), slice(x, x + self.patch))
        pixels = np.asarray(scene[window])
        patch_values = values[window]
        record = ImageRecord(
            source=item, file_name=item, height=self.patch, width=self.patch,
            image=np.ascontiguousarray(
                pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32)
            ),
        )
        record.instances = label_map_instances(
            patch_values, self.classes, f"{self.label_name(scene_item)} at y={y}, x={x}", item,
            self.options, report,
        )
        record.ignore_mask = ignore_region(patch_values, self.classes)
        return record


SOURCE = RasterPatchSource
