"""pyproject.toml declares every shipped data file the way setuptools wants it, so an install
prints no "Package ... is absent from the `packages` configuration" warning and drops nothing."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_belongs_to_a_declared_package_with_a_matching_pattern():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    packages, data = set(config["packages"]), config["package-data"]

    def folder(package: str) -> Path:  # the longest package-dir prefix maps the rest to sub-folders
        prefix = max((p for p in dirs if package == p or package.startswith(p + ".")), key=len)
        return ROOT / dirs[prefix] / Path(*package[len(prefix):].split(".")[1:])

    found = 0
    for pkg in [p for p in dirs if p != "trainplan"]:
        for path in folder(pkg).rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            found += 1
            rel = path.parent.relative_to(folder(pkg))
            owner = ".".join([pkg, *rel.parts])
            assert owner in packages, f"{path} lies in {owner}, which is not in [tool.setuptools] packages"
            assert any(fnmatch.fnmatch(path.name, pat) for pat in data.get(owner, [])), \
                f"{path.name} matches no package-data pattern of {owner}"
    assert found >= 3  # the GPU and model catalogs and the default sweep
    for package in data:
        assert package in packages and folder(package).is_dir(), f"package-data names {package}, which ships nothing"
