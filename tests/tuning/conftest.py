"""Fixtures of the tuning tests: a 64 px U-Net on the shared synthetic car split."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UNET = str(REPO_ROOT / "configs" / "tiny" / "unet_R_18_tiny.yaml")


@pytest.fixture(scope="session")
def unet_opts(car_split) -> list[str]:
    """KEY VALUE opts: the car split, 64 px, 4 iterations evaluated every 2, no periodic
    checkpoint."""
    return [
        "DATASETS.TRAIN", f"('{car_split['train']}',)", "DATASETS.TEST", f"('{car_split['val']}',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "2", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "100",
    ]


@pytest.fixture
def space_file(tmp_path):
    """``write(text) -> path`` of a search-space YAML in tmp_path."""

    def write(text: str) -> Path:
        path = tmp_path / "space.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
