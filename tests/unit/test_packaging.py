"""Every Python package in the tree is declared, so a built wheel holds all of it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_declared() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    declared = set(config["packages"])
    found = set()
    for package, directory in mapping.items():
        base = ROOT / directory
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    # rglob does not descend into the ticklake/<name> symlinks; each has its own mapping.
    assert "ticklake.stack.components" in found
    missing = sorted(found - declared)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_java_source_the_set_up_compiles_is_package_data() -> None:
    """``ticklake setup`` compiles ``jobs/java/**.java`` from the installed package: a
    non-editable install (the Flink image) must carry every one of them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    base = ROOT / config["package-dir"]["ticklake.jobs"]
    globs: list[str] = config["package-data"]["ticklake.jobs"]
    sources = sorted(p.relative_to(base) for p in (base / "java").rglob("*.java"))
    assert len(sources) >= 3
    patterns = [re.compile(_glob_regex(g)) for g in globs]
    uncovered = [s for s in sources if not any(p.fullmatch(s.as_posix()) for p in patterns)]
    assert not uncovered, f"add to [tool.setuptools.package-data] ticklake.jobs: {uncovered}"


def _glob_regex(glob: str) -> str:
    """A setuptools package-data glob as a regex: ``**/`` any directories, ``*`` within one."""
    parts = re.split(r"(\*\*/|\*)", glob)
    table = {"**/": "(?:.*/)?", "*": "[^/]*"}
    return "".join(table.get(part, re.escape(part)) for part in parts)
