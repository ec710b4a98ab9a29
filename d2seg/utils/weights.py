"""Fetch torchvision's published ImageNet/COCO weights once, as an explicit step.

Training never downloads (``MODEL.WEIGHTS`` is a local file); :func:`fetch_weights` is what
``tools/fetch_weights.py`` runs on a machine with network. The URL comes from torchvision's
weight enums (``torchvision.models.get_model_weights(name).DEFAULT``); their file names carry
the first hex digits of the file's sha256 (``resnet50-11ad3fa6.pth``), checked as
``torch.hub`` does. The result is a plain state dict that d2seg's checkpointer maps onto a
ResNet trunk (or a Mask R-CNN) by key names.
"""

import os
import tempfile
import urllib.error
import urllib.parse
from pathlib import Path

import torch
from torch.hub import HASH_REGEX, download_url_to_file

from d2seg.checkpoint import load_checkpoint_file
from d2seg.errors import CheckpointError, ConfigError
from d2seg.utils.io import atomic_open

# Weights whose keys d2seg maps: ResNet trunks (MODEL.RESNETS.DEPTH) and torchvision's Mask R-CNN.
KNOWN_WEIGHTS = ("resnet18", "resnet34", "resnet50", "resnet101", "maskrcnn_resnet50_fpn")


def published_weights(name: str) -> tuple[str, str]:
    """``(url, enum name)`` of torchvision's default weights for ``name`` (e.g. "resnet50")."""
    if name not in KNOWN_WEIGHTS:
        raise ConfigError(
            f"no published weights named {name!r}; fix: use one of {', '.join(KNOWN_WEIGHTS)}"
        )
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    return weights.url, f"{type(weights).__name__}.{weights.name}"


def hash_prefix(url: str) -> str | None:
    """The sha256 prefix a torchvision/torch.hub file name carries, or ``None``."""
    match = HASH_REGEX.search(os.path.basename(urllib.parse.urlparse(url).path))
    return match.group(1) if match and match.group(1) else None


def fetch_weights(url: str, destination: str | os.PathLike, *, progress: bool = True) -> Path:
    """Download ``url`` and write its state dict to ``destination`` (atomically).

    The download's sha256 must start with the prefix in its file name (when it has one).
    ``destination`` holds ``torch.save(state_dict)``: tensors only, loadable with
    ``torch.load(weights_only=True)``. Nothing is written on any failure.

    Raises:
        CheckpointError: the host cannot be reached, the hash differs, or the file is not a
            state dict; the message says how to get the file another way.
    """
    destination = Path(destination)
    try:
        with tempfile.TemporaryDirectory() as folder:
            download = os.path.join(folder, destination.name)
            download_url_to_file(url, download, hash_prefix=hash_prefix(url), progress=progress)
            state_dict = load_checkpoint_file(download)
    except urllib.error.URLError as e:
        host = urllib.parse.urlparse(url).netloc or url
        raise CheckpointError(
            f"cannot reach {host} ({getattr(e, 'reason', e)}); fix: download {url} on a machine "
            f"with network and copy it to {destination}"
        ) from None
    except RuntimeError as e:
        if "invalid hash value" not in str(e):
            raise
        raise CheckpointError(
            f"{url} downloaded with a different sha256 than its name says ({e}); nothing was "
            f"written; fix: download it again, or check the mirror given with --url"
        ) from None
    state_dict = state_dict.get("state_dict", state_dict)
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(
            f"{url} is not a state dict of tensors; fix: give --url a torchvision weights file"
        )
    with atomic_open(destination, "wb") as f:
        torch.save(state_dict, f)
    return destination
