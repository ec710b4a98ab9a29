"""Command-line tools print one line for a user mistake, also one raised in a loader worker."""

import subprocess
import sys

from torch.utils.data import DataLoader, Dataset

from d2seg.errors import DatasetError
from d2seg.utils.cli import user_message


class MissingImageDataset(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise DatasetError("image a.jpg does not exist; fix: check the path")


def test_error_from_a_dataloader_worker_keeps_only_the_original_message():
    try:
        next(iter(DataLoader(MissingImageDataset(), num_workers=1)))
    except DatasetError as e:
        assert user_message(e) == "image a.jpg does not exist; fix: check the path"
    else:
        raise AssertionError("the worker's DatasetError was not re-raised")


def test_run_cli_prints_one_line_and_exits_2():
    code = (
        "from d2seg.utils.cli import run_cli\n"
        "from d2seg.errors import ConfigError\n"
        "def main():\n"
        "    raise ConfigError('SOLVER.BASE_LR must be positive;\\n fix: set it > 0')\n"
        "run_cli(main)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "error: SOLVER.BASE_LR must be positive; fix: set it > 0\n"
