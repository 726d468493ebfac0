"""A digest of the source that draws the tables, figures and report, for those rules' params.

Snakemake reruns a job when its script or params change, not when a library it imports does.
The tables, figures and report take seconds to redo, so their rules carry a digest of the
source of :mod:`mammoscale.report` and of every mammoscale module it imports, directly or not
(found by reading the import statements, so nothing is imported here and no list is kept by
hand): a change to how a figure is drawn, or to a column it reads, redraws it. Training cells
carry no such digest (hours of GPU time); force them with ``--forcerun train_cell`` after
changing training code.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
ROOT = "mammoscale"


def module_file(name: str, package: Path = PACKAGE) -> Path | None:
    """The source file of module ``name`` (``mammoscale.x.y``) under ``package``, or None."""
    parts = name.split(".")[1:]
    base = package.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, name: str) -> set[str]:
    """The mammoscale modules that the module ``name`` at ``path`` imports."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module.startswith(ROOT + ".")}


def closure(start: str, package: Path = PACKAGE) -> dict[str, Path]:
    """``start`` (a module or package: then all its modules) and every mammoscale module they import."""
    seen: dict[str, Path] = {}
    start_file = module_file(start, package)
    todo = [start]
    if start_file is not None and start_file.name == "__init__.py":
        todo += [f"{start}.{p.stem}" for p in sorted(start_file.parent.glob("*.py")) if p.stem != "__init__"]
    while todo:
        name = todo.pop()
        path = module_file(name, package)
        if name in seen or path is None:
            continue
        seen[name] = path
        parents = name.split(".")
        todo += [".".join(parents[:i]) for i in range(2, len(parents))]
        todo += sorted(_imports(path, name))
    return seen


def digest(start: str = "mammoscale.report", package: Path = PACKAGE) -> str:
    """16 hex digits of SHA-256 over the source of ``start`` and everything of mammoscale it imports."""
    sha = hashlib.sha256()
    for name, path in sorted(closure(start, package).items()):
        sha.update(name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()[:16]
