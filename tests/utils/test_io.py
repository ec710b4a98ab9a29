"""atomic_directory: a folder appears whole or not at all, and never over an existing one."""

import pytest

from d2seg.errors import ConfigError, DatasetError, OutputExistsError
from d2seg.utils.io import atomic_directory


def test_atomic_directory_refuses_an_existing_target_before_creating_anything(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous run")
    with pytest.raises(OutputExistsError) as excinfo:
        with atomic_directory(target, what="--output"):
            pytest.fail("the block must not run")
    message = str(excinfo.value)
    assert f"--output {target} already exists; fix: choose a new --output or delete it" in message
    # callers catch it as the option's or the dataset folder's mistake
    assert isinstance(excinfo.value, ConfigError) and isinstance(excinfo.value, DatasetError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left
    assert (target / "old.txt").read_text() == "previous run"


def test_atomic_directory_appears_only_when_the_block_succeeds(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "failed") as folder:
            (folder / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(tmp_path / "done") as folder:
        (folder / "a.txt").write_text("a")
        assert not (tmp_path / "done").exists()
    assert (tmp_path / "done" / "a.txt").read_text() == "a"
