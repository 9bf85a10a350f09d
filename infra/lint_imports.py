"""Runs import-linter (``lint-imports``, contracts in pyproject.toml) over the package as it is installed.

Why not plain ``lint-imports``: flows/, tasks/, schemas/ and infra/ install as alertdist.flows, .tasks, .schemas
and .infra through ``[tool.setuptools.package-dir]``, but import-linter (grimp) finds a package's modules by
walking its folder on disk, and alertdist/ does not hold them: it would not see those four sub-packages at all.
So this lays the installed shape out as a tree of links in a scratch folder (real folders, linked files, as
pyproject.toml maps them) and runs ``lint-imports`` there; its messages name modules, so nothing else changes.

Run from the repository root: ``.venv/bin/python -m alertdist.infra.lint_imports [lint-imports options]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path


def link_tree(source: Path, target: Path) -> None:
    """``target`` mirrors ``source``: the same folders, each file a link to the original (no caches)."""
    for folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        here = target / Path(folder).relative_to(source)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            (here / name).symlink_to(Path(folder, name))


def installed_view(repo: Path, into: Path) -> None:
    """The root package in ``into`` as installed: alertdist/ plus each package-dir mapped folder in its place."""
    mapped = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-dir", {})
    link_tree(repo / "alertdist", into / "alertdist")
    for package, folder in mapped.items():
        link_tree(repo / folder, into.joinpath(*package.split(".")))


def main(argv: list[str] | None = None) -> int:
    repo = Path.cwd()
    if not (repo / "pyproject.toml").is_file() or not (repo / "alertdist").is_dir():
        print("run this from the repository root (where pyproject.toml and alertdist/ are)", file=sys.stderr)
        return 2
    lint_imports = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="alertdist-imports-") as scratch:
        installed_view(repo, Path(scratch))
        (Path(scratch) / "pyproject.toml").symlink_to(repo / "pyproject.toml")  # where the contracts are
        # lint-imports puts its working folder first on sys.path, so the linked tree is what it analyses
        command = [str(lint_imports), "--no-cache", *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(command, cwd=scratch).returncode


if __name__ == "__main__":
    sys.exit(main())
