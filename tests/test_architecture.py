"""The house's rules, checked: only the training subpackage imports torch, and the Snakefile parses without it.

Every SLURM job parses the Snakefile again, and a laptop plans a cluster's study: importing
torch there would cost seconds per job, or fail where only the core environment is installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import mammoscale

from conftest import REPO
from test_workflow import copy_workflow, snakemake

PACKAGE = Path(mammoscale.__file__).parent
TORCH_SIDE = ("torch", "x_transformers", "transformers", "horovod", "flash_attn", "einops")
BLOCK = (
    "import sys\n"
    "class _Blocked:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {TORCH_SIDE!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)', name=name)\n"
    "sys.meta_path.insert(0, _Blocked())\n"
)
"""Code that makes torch and its kin unimportable, as in an environment without the train extra."""


def modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.walk_packages([str(PACKAGE)], "mammoscale.") if not m.name.endswith("__main__")
    )


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_training_subpackage_names_torch_and_its_kin():
    outside = {
        str(p.relative_to(PACKAGE)): sorted(imported(p) & set(TORCH_SIDE))
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] != "train"
    }
    assert len(outside) > 30
    assert {name: found for name, found in outside.items() if found} == {}


def test_every_module_outside_training_imports_with_torch_blocked():
    names = [name for name in modules() if not name.startswith("mammoscale.train")]
    code = (
        BLOCK + "import importlib\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"assert not set(sys.modules) & set({TORCH_SIDE!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "mammoscale.report.figures" in names and "mammoscale.plan.study" in names


def test_training_without_torch_says_what_to_install():
    code = (
        BLOCK + "from mammoscale.errors import UserError\n"
        "try:\n"
        "    import mammoscale.train\n"
        "except UserError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "training needs torch" in out.stdout and "pip install -e '.[train]'" in out.stdout


def test_the_snakefile_plans_the_study_without_torch(tmp_path):
    """A dry run of the whole study with torch and its kin unimportable (a ``sitecustomize`` blocks them)."""
    workdir = copy_workflow(tmp_path / "wf")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK)
    result = snakemake(workdir, "-n", "all", "--configfile", "config/test.yaml", env={"PYTHONPATH": str(blocker)})
    assert "train_cell" in result.stdout


def test_no_module_writes_an_image_size_or_cell_label_by_hand():
    """``img{S}`` and ``img{S}_p{P}`` have one template, ``files.SIZE_LABEL`` (``CELL_LABEL`` and ``CELL`` build on it):
    every other producer asks ``files.size_label``, ``files.cell_label``, ``files.cell_name`` or a ``Cell``."""
    owner = (PACKAGE / "files.py", 'SIZE_LABEL = "img{image_size}"')
    places = [REPO / "Snakefile"] + [
        path
        for folder in ("src", "rules", "workflow", "bench", "tools")
        for path in sorted((REPO / folder).rglob("*"))
        if path.is_file() and (path.suffix in (".py", ".smk", ".yaml", ".json", ".rst") or folder == "tools")
    ]
    by_hand = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in places
        if "egg-info" not in str(path)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "img{" in line and (path, line) != owner
    ]
    assert len(places) > 60
    assert by_hand == [], "written by hand, not asked of mammoscale.files:\n" + "\n".join(by_hand)


DESIGN = REPO / "docs" / "design.md"
SHARED = "Every stage may import the shared modules:"


def allowed_name(item: str) -> str | None:
    """One name of a *may import* cell: ``mammoscale.<module>`` for a backticked module, else a distribution's or
    package's name normalised (PEP 503); None for the standard library, always allowed."""
    item = item.strip().strip("*")
    if item == "the standard library":
        return None
    if item.startswith("`"):
        return "mammoscale." + item.strip("`")
    return re.sub(r"[-_.]+", "-", item).lower()


def rooms() -> tuple[dict[str, tuple[str, set[str]]], set[str]]:
    """docs/design.md's table of rooms, by module: its row's first cell and what it may import; and the shared modules
    every stage may import."""
    text = DESIGN.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`mammoscale."):
            allowed = {allowed_name(item) for item in cells[2].split(";")[0].split(",")} - {None}
            for module in re.findall(r"`(?:mammoscale)?\.(\w+)`", cells[0]):
                rows[module] = (cells[0], allowed)
    shared = set(re.findall(r"`(\w+)`", text[text.index(SHARED) + len(SHARED) :].split(";")[0]))
    return rows, shared


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The packages a module imports, beyond the standard library: ``mammoscale.<module>`` for the package's own."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            own = node.module == "mammoscale"
            names |= {f"mammoscale.{alias.name}" for alias in node.names} if own else {node.module}
    found = set()
    for name in names:
        top, _, rest = name.partition(".")
        if top == "mammoscale":
            if rest.split(".")[0] in modules:
                found.add("mammoscale." + rest.split(".")[0])
        elif top not in sys.stdlib_module_names and top != "__future__":
            found.add(top)
    return found


def test_every_module_imports_only_what_its_row_of_the_design_allows():
    """The table of docs/design.md, checked: each package a module imports is in its row's *may import* (a
    third-party package by its distribution's name or its own), or the module's own package, or (for a stage) one
    of the shared modules. A row may name a module that does not exist yet."""
    rows, shared = rooms()
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in PACKAGE.glob("*/__init__.py")
    }
    assert sorted(modules - set(rows)) == [], "modules without a row in docs/design.md's table"
    assert {"files", "config", "errors", "atomic"} <= shared <= set(rows) and len(rows) >= 16
    distributions = importlib.metadata.packages_distributions()
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if module == "__init__":
            continue
        row, allowed = rows[module]
        free = {f"mammoscale.{module}"} | ({f"mammoscale.{m}" for m in shared} if module not in shared else set())
        for name in sorted(imports_of(path, modules) - free - allowed):
            known = {allowed_name(name), *(allowed_name(d) for d in distributions.get(name, []))}
            if name.startswith("mammoscale.") or not known & allowed:
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)} imports {name}; its row {row} allows {sorted(allowed)}"
                )
    assert wrong == [], "docs/design.md's table of rooms does not allow:\n" + "\n".join(wrong)


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "Imports:" in doc and len(doc.splitlines()) >= 4, init


def body_lines(function: ast.FunctionDef) -> int:
    """A function's lines from its first statement after the docstring (not its signature) to its end."""
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    return function.end_lineno - body[0].lineno + 1


def test_no_module_over_400_lines_and_no_function_over_60():
    long_modules, long_functions = [], []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long_modules.append(str(path.relative_to(PACKAGE)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > 60:
                long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert long_modules == [] and long_functions == []


def test_the_adapters_are_thin():
    """An adapter configures the log and calls the package: a handful of statements, no logic of its own."""
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        statements = [node for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr))]
        calls = [node for node in tree.body if isinstance(node, ast.Expr)]
        assert len(statements) <= 4 and len(calls) <= 4, script.name
        assert not [node for node in ast.walk(tree) if isinstance(node, (ast.For, ast.While, ast.FunctionDef))]
