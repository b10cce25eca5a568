"""Shared test settings."""

import os
from pathlib import Path

import pytest
import torch

# The suite is many small CPU ops and runs as two pytest-xdist workers on two cores: one intra-op thread
# per process avoids oversubscription, which on shared cores made small convs up to 20x slower.
torch.set_num_threads(1)

CIFAR_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"


@pytest.fixture
def cifar_archive() -> Path:
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"{CIFAR_ARCHIVE} is not present")
    return CIFAR_ARCHIVE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-array caches go to one session temp folder, never to the user's ~/.cache."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # one cache for all workers of this run (writes are atomic renames)
    monkeypatch.setenv("LEANVISION_CACHE", str(base / "lv-cache"))
