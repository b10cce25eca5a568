"""Shared test settings."""

import os
import tarfile
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


@pytest.fixture(scope="session")
def cifar_tree(tmp_path_factory) -> Path:
    """A folder tree ``train|test/<class>/<image>.jpg`` of the CIFAR-10 archive's first 20 training and 10 test
    JPEGs of every class, as the archive holds them (300 real images)."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"{CIFAR_ARCHIVE} is not present")
    keep, counts = {"train": 20, "test": 10}, {}
    root = tmp_path_factory.mktemp("cifar-tree")
    with tarfile.open(CIFAR_ARCHIVE, "r|gz") as tf:
        for m in tf:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 3 or parts[0] not in keep:
                continue
            folder = "/".join(parts[:2])
            if counts.get(folder, 0) < keep[parts[0]]:
                counts[folder] = counts.get(folder, 0) + 1
                (root / folder).mkdir(parents=True, exist_ok=True)
                (root / m.name).write_bytes(tf.extractfile(m).read())
            if len(counts) == 20 and all(n == keep[f.split("/")[0]] for f, n in counts.items()):
                break
    return root


@pytest.fixture(scope="session")
def cifar_run(cifar_tree, tmp_path_factory) -> Path:
    """The run folder of a resnet20 trained 3 short epochs on :func:`cifar_tree` through ``leanvision train``."""
    from leanvision.cli import main

    out = tmp_path_factory.mktemp("cifar-run")
    with pytest.MonkeyPatch.context() as mp:  # session fixtures start before the function-scoped cache isolation
        mp.setenv("LEANVISION_CACHE", str(out / "lv-cache"))
        rc = main(["train", "--model", "resnet20", "--data", str(cifar_tree), "--epochs", "3", "--batch-size", "50",
                   "--project", str(out), "--name", "r20", "--no-progress"])
    assert rc == 0
    return out / "r20"
