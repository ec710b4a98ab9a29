"""Instance masks of a large image kept as their bounding crops.

A tiled prediction of a 2048² image holds hundreds of small objects: as an R×H×W bool tensor
its masks take R × 4 MB (602 objects: 2.5 GB) and pasting them costs as much as the heads.
:class:`CroppedMasks` keeps each mask as the crop of its bounding box plus where that crop sits
in the image, and every reader of ``instances["masks"]`` (COCO RLE, polygons, Labelme shapes,
the Visualizer, panoptic fusion) takes either form through :meth:`CroppedMasks.of`, so they
have one code path: per-object crops, pasted at full size only on demand (:meth:`paste`,
:meth:`to_tensor`).
"""

from typing import Any, Iterator

import numpy as np
import torch
from pycocotools import mask as mask_util


class CroppedMasks:
    """R bool masks of an H×W image: ``crops[i]`` (h×w bool: a rectangle of the image that holds
    every pixel of mask i, e.g. its bounding box or its detection box; 0×0 for an empty mask)
    with its top-left pixel at ``origins[i]`` = (y, x) of the image.

    Behaves like the R×H×W bool mask tensor: ``len``, ``shape``, indexing by an index array
    or a bool keep-mask (another ``CroppedMasks``, as ``tools/predict.py``'s score filter
    does), by an int or iteration (one H×W tensor at a time). Code written for the tensor
    still works through a full-size fallback (``torch.equal(masks, t)``, ``masks.any(0)``,
    ``np.asarray(masks)``: :meth:`to_tensor`, R × H·W bytes), so the readers in this package
    use the crops instead.
    """

    def __init__(self, crops: list[np.ndarray], origins: list[tuple[int, int]],
                 image_size: tuple[int, int]):
        self.crops, self.origins = crops, origins
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @classmethod
    def from_dense(cls, masks: Any) -> "CroppedMasks":
        """R×H×W masks (a tensor on any device or an array; bool, or float probabilities
        thresholded at 0.5) as their tight bounding crops."""
        if isinstance(masks, torch.Tensor):
            masks = masks.detach().cpu()
            masks = (masks >= 0.5) if masks.is_floating_point() else masks.bool()
            masks = masks.numpy()
        else:
            masks = np.asarray(masks)
            masks = (masks >= 0.5) if np.issubdtype(masks.dtype, np.floating) else \
                masks.astype(bool)
        # Row and column extents in two vectorised reductions, not a nonzero() per mask.
        rows, cols = masks.any(axis=2), masks.any(axis=1)
        crops, origins = [], []
        for mask, row, col in zip(masks, rows, cols):
            ys, xs = np.flatnonzero(row), np.flatnonzero(col)
            if len(ys) == 0:
                crops.append(np.zeros((0, 0), bool))
                origins.append((0, 0))
                continue
            crops.append(mask[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1])
            origins.append((int(ys[0]), int(xs[0])))
        return cls(crops, origins, masks.shape[1:])

    @classmethod
    def of(cls, masks: Any) -> "CroppedMasks":
        """``masks`` itself if it is a ``CroppedMasks``, else :meth:`from_dense` of it."""
        return masks if isinstance(masks, cls) else cls.from_dense(masks)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(R, H, W), as the dense tensor's."""
        return (len(self), *self.image_size)

    def __getitem__(self, index: Any) -> "CroppedMasks | torch.Tensor":
        """Mask ``index`` (an int) as an H×W bool tensor, or the masks at ``index`` (an R-long
        bool keep-mask or integer indices, array or tensor) as ``CroppedMasks``."""
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        if index.ndim == 0 and index.dtype != bool:
            return torch.from_numpy(self.paste(int(index)))
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.reshape(-1).tolist()
        return CroppedMasks([self.crops[i] for i in index], [self.origins[i] for i in index],
                            self.image_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield torch.from_numpy(self.paste(i))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        dense = self.to_tensor().numpy()
        return dense if dtype is None else dense.astype(dtype)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch functions see the R×H×W tensor (:meth:`to_tensor`)."""
        dense = lambda a: a.to_tensor() if isinstance(a, cls) else a  # noqa: E731
        return func(*map(dense, args), **{k: dense(v) for k, v in (kwargs or {}).items()})

    def __getattr__(self, name: str) -> Any:
        """Tensor methods (``flatten``, ``any``, ``numpy``...) of the R×H×W tensor."""
        if name.startswith("_") or name in ("crops", "origins", "image_size"):
            raise AttributeError(name)
        return getattr(self.to_tensor(), name)

    def items(self) -> Iterator[tuple[np.ndarray, int, int]]:
        """``(crop, y0, x0)`` of each mask in order."""
        for crop, (y0, x0) in zip(self.crops, self.origins):
            yield crop, y0, x0

    @property
    def areas(self) -> np.ndarray:
        """R int64 pixel counts."""
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    def paste(self, i: int) -> np.ndarray:
        """Mask ``i`` at the image's size (H×W bool)."""
        full = np.zeros(self.image_size, bool)
        (y0, x0), crop = self.origins[i], self.crops[i]
        full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        return full

    def to_tensor(self) -> torch.Tensor:
        """The R×H×W bool tensor (R × H·W bytes: for the few masks, or a small image)."""
        full = torch.zeros(self.shape, dtype=torch.bool)
        for k, (crop, y0, x0) in enumerate(self.items()):
            full[k, y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = torch.from_numpy(crop)
        return full

    def union(self) -> np.ndarray:
        """H×W bool: the pixels of any mask."""
        full = np.zeros(self.image_size, bool)
        for crop, y0, x0 in self.items():
            full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] |= crop
        return full

    def to_rle(self) -> list[dict]:
        """Each mask as COCO compressed RLE of the whole image (``{"size": [H, W], "counts":
        bytes}``, byte-identical to ``pycocotools.mask.encode`` of the pasted mask), built from
        the crop without pasting it."""
        height, width = self.image_size
        return [mask_util.frPyObjects({"size": [height, width],
                                       "counts": _run_lengths(crop, y0, x0, height, width)},
                                      height, width)
                for crop, y0, x0 in self.items()]


def _run_lengths(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> list[int]:
    """COCO's uncompressed RLE (column-major runs, zeros first) of ``crop`` placed at (y0, x0)
    in a height×width image. Only the crop's columns are scanned (each padded to the image's
    height); the empty columns left and right of it add to the first and last zero runs."""
    h, w = crop.shape
    if crop.size == 0 or not crop.any():
        return [height * width]
    columns = np.zeros((w, height), bool)  # one row per image column: column-major order
    columns[:, y0:y0 + h] = crop.T
    flat = columns.reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0]:
        runs.insert(0, 0)  # COCO counts start with a (possibly empty) run of zeros
    runs[0] += x0 * height
    trailing = (width - x0 - w) * height
    if len(runs) % 2:  # the last run is zeros
        runs[-1] += trailing
    elif trailing:
        runs.append(trailing)
    return runs
