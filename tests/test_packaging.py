"""Packaging: the license file matches the declared license, the metadata build does not warn, the version has
one source, and `leanvision --version` prints it."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import leanvision
from leanvision.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_is_the_apache_2_text_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "9. Accepting Warranty or Additional Liability." in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text.split()) > 1500  # the full text, not a pointer to it


def test_the_metadata_build_takes_the_version_from_the_package_and_does_not_warn(tmp_path):
    code = ("import warnings, sys; from setuptools import build_meta\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            f"    name = build_meta.prepare_metadata_for_build_wheel({str(tmp_path)!r})\n"
            "print(name); print('WARNINGS:', [str(x.category.__name__) + ': ' + str(x.message)[:80] for x in w])")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "WARNINGS: []" in res.stdout and "Deprecat" not in res.stderr, res.stdout + res.stderr
    meta = (tmp_path / f"leanvision-{leanvision.__version__}.dist-info" / "METADATA").read_text()
    assert f"\nVersion: {leanvision.__version__}\n" in meta and "\nLicense-Expression: Apache-2.0\n" in meta
    assert 'Requires-Dist: onnxruntime>=1.18; extra == "export"' in meta
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"leanvision {leanvision.__version__} (torch ")


def test_the_changelog_has_an_unreleased_section():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and "Keep a Changelog" in text and "leanvision export" in text
