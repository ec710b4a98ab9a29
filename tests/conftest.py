"""Shared fixtures: where the real annotation data written by others lives."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("D2SEG_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (override with D2SEG_TEST_DATA); skipped only outside CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared test data missing at {SHARED_DATA}; CI must have it")
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set D2SEG_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
