"""The layers of ARCHITECTURE.md are enforced: import-linter's contract in pyproject.toml holds for the tree, and
the same contract fails a copy of the tree into which one upward import was written."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def lint(src: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contract over the package found in ``src`` (in its own process)."""
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")], capture_output=True,
                          text=True, timeout=300, env=env, cwd=src)


def test_the_tree_keeps_the_layer_contract():
    res = lint(ROOT / "src")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "KEPT" in res.stdout and "1 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_it(tmp_path):
    shutil.copytree(ROOT / "src" / "leanvision", tmp_path / "leanvision",
                    ignore=shutil.ignore_patterns("__pycache__"))
    base = tmp_path / "leanvision" / "models" / "base.py"
    base.write_text(base.read_text() + "\n\ndef _meter():\n    from leanvision.engine.meter import state_bytes\n"
                    "    return state_bytes\n")  # a model reaching up into the engine, even inside a function
    res = lint(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "BROKEN" in res.stdout and "leanvision.models.base -> leanvision.engine.meter" in res.stdout
