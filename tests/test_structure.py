"""The package's shape: no module imports another's private name, no import cycle, every
reference to the method points at docs/method.md, and the stored notebooks and the
README's generated results stay what ./run_all.sh wrote, each stored notebook is its
.py source, and every module path the prose names exists. These read the source as text
(`ast`, jupytext), so they need no model and take a few seconds."""
from __future__ import annotations

import ast
import importlib.util
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "protoef"
NOTEBOOK_BUDGET_BYTES = 6 * 2**20  # the executed demo notebooks, outputs included (README, "Notebooks")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}


def test_the_helpers_resolve_relative_imports_and_see_the_package():
    assert {"protoef.training.lifecycle", "protoef.companion.notebook", "protoef.analysis.explain"} <= MODULES
    # loops.py's `from .build import RunContext` must come back absolute, on its own line
    # (found here by reading the file's text, not through the helper under test).
    source = (PACKAGE / "training" / "loops.py").read_text().splitlines()
    line = 1 + next(number for number, text in enumerate(source) if text.startswith("from .build import RunContext"))
    assert ("protoef.training.build", ["RunContext"], line) in imports(PACKAGE / "training" / "loops.py")


def test_no_module_imports_another_modules_private_name():
    offences = []
    for path in SOURCES:
        for module, names, line in imports(path):
            if not module.startswith(("protoef", "benchmarks")):
                continue
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            private += [part for part in module.split(".") if part.startswith("_") and part not in ("__main__", "__init__")]
            offences += [f"{path.relative_to(ROOT)}:{line} imports {module}.{name}" for name in private]
    assert not offences, offences


def test_the_package_has_no_import_cycle():
    graph = {module: set() for module in MODULES}
    for path in PACKAGE.rglob("*.py"):
        for module, names, _ in imports(path):
            targets = {f"{module}.{name}" for name in names} | {module}
            graph[module_name(path)] |= {target for target in targets if target in MODULES and target != module_name(path)}
    # A package's __init__ is not an edge: each __init__ here only documents its folder.
    for module in graph:
        graph[module] = {target for target in graph[module] if not (target in ("protoef",) or
                         (PACKAGE.parent / target.replace(".", "/") / "__init__.py").is_file())}
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_package_folders_import_one_way():
    # data → (model, losses, metrics, diagnostics) → training → analysis → companion; never back.
    layers = {"data": 0, "files": 0, "config": 0, "config_keys": 0, "pretrained": 0, "numerics": 0, "model": 1, "losses": 1, "metrics": 1, "diagnostics": 1,
              "training": 2, "analysis": 3, "companion": 4, "__main__": 5}
    offences = []
    for path in PACKAGE.rglob("*.py"):
        own = module_name(path).split(".")
        if len(own) < 2:
            continue
        for module, names, line in imports(path):
            parts = module.split(".")
            if parts[0] != "protoef" or len(parts) < 2:
                continue
            if layers[parts[1]] > layers[own[1]]:
                offences.append(f"{path.relative_to(ROOT)}:{line} ({own[1]}) imports {module} ({parts[1]})")
    assert not offences, offences


def test_the_method_is_cited_from_the_repository_not_an_outside_spec():
    method = (ROOT / "docs" / "method.md").read_text()
    sections = set(re.findall(r"^## (§\d)", method, flags=re.M))
    assert sections == {f"§{n}" for n in range(1, 8)}
    cited, stale = set(), []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb"), ROOT / "README.md"]:
        text = path.read_text()
        stale += [str(path.relative_to(ROOT))] if re.search(r"\bSPEC\b", text) else []
        cited |= set(re.findall(r"docs/method\.md (§\d)", text))
    assert not stale, f"cite docs/method.md, not SPEC: {stale}"
    assert cited and cited <= sections, cited - sections


def test_no_module_outgrows_one_owner():
    # Issue 19: no module under protoef/ or benchmarks/ over 450 lines.
    long = {str(path.relative_to(ROOT)): n for path in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
            if (n := len(path.read_text().splitlines())) > 450}
    assert not long, long


def test_stored_notebooks_fit_the_size_budget_and_keep_one_parameters_cell():
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sum(path.stat().st_size for path in paths) <= NOTEBOOK_BUDGET_BYTES
    for path in paths:
        cells = json.loads(path.read_text())["cells"]
        tagged = [cell for cell in cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
        injected = [cell for cell in cells if "injected-parameters" in cell.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and not injected, path.name  # papermill's injection would pin a profile for CI
        source = "".join(tagged[0]["source"])
        assert "profile = None" in source, path.name  # so $PROTOEF_PROFILE (smoke in CI) decides


def test_the_readme_results_block_is_the_generated_results_file():
    from protoef.companion import claims

    if not list((ROOT / "figures" / "claims").glob("*.json")):
        pytest.skip("no stored demo claims yet: ./run_all.sh writes them")
    readme = (ROOT / "README.md").read_text()
    block = readme.split(claims.BEGIN, 1)[1].split(claims.END, 1)[0].lstrip("\n")
    stored = ROOT / "figures" / "results.md"
    assert block == stored.read_text(), "README results block differs from figures/results.md: run ./run_all.sh"
    assert stored.read_text() == claims.collect("demo"), "figures/results.md is not what the stored claims give"


# ----------------------------------------------------------------------------- notebook sources
def notebook_tool():
    """tools/notebooks.py (not a package module): the one definition of "the same cells"."""
    spec = importlib.util.spec_from_file_location("notebook_tool", ROOT / "tools" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_stored_notebook_has_the_cells_of_its_py_source():
    tool = notebook_tool()
    stored = tool.stored_notebooks()
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [path.stem for path in stored] == [path.stem for path in sources], (
        "every notebooks/NN_name.py needs its executed NN_name.ipynb and the other way round "
        "(./run_all.sh --only NN writes the .ipynb; python tools/notebooks.py sources NN the .py)")
    problems = [problem for path in stored if (problem := tool.difference(path))]
    assert not problems, "\n".join(problems)
    for path in stored:  # what papermill --kernel python3 and nbval start
        assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "python3", path.name
    for path in sources:
        assert tool.read_source(path).metadata["kernelspec"]["name"] == "python3", path.name


def test_the_sync_check_names_the_notebook_and_the_first_differing_cell(tmp_path):
    import nbformat

    tool = notebook_tool()
    original = ROOT / "notebooks" / "01_data.ipynb"
    (tmp_path / "01_data.py").write_text((ROOT / "notebooks" / "01_data.py").read_text())
    notebook = nbformat.read(original, as_version=4)
    notebook.cells[2].source += "\nprint('an edit made in the .ipynb only')"
    nbformat.write(notebook, tmp_path / "01_data.ipynb")
    assert tool.difference(tmp_path / "01_data.ipynb").startswith(
        "01_data.ipynb cell 2 (code) differs from 01_data.py in line ")
    notebook = nbformat.read(original, as_version=4)
    notebook.cells[1].metadata["tags"] = []  # papermill would inject after no cell
    nbformat.write(notebook, tmp_path / "01_data.ipynb")
    assert "cell 1 (code) differs from 01_data.py in the parameters tag" in tool.difference(tmp_path / "01_data.ipynb")
    notebook = nbformat.read(original, as_version=4)
    notebook.cells[0].outputs = []  # outputs and execution records are not part of the source
    for cell in notebook.cells:
        cell.metadata["papermill"] = {"duration": 1.0}
        cell.source += "\n\n"  # nor are trailing blank lines, which the percent format cannot keep
    nbformat.write(notebook, tmp_path / "01_data.ipynb")
    assert tool.difference(tmp_path / "01_data.ipynb") is None


def test_the_notebook_papermill_runs_is_built_from_the_source_without_writing_to_it(tmp_path):
    tool = notebook_tool()
    source = ROOT / "notebooks" / "04_ablation_pas.py"
    before = source.read_bytes()
    built = json.loads(tool.build(source, tmp_path / "04.ipynb").read_text())
    assert source.read_bytes() == before
    assert built["metadata"]["kernelspec"]["name"] == "python3"
    assert [cell["id"] for cell in built["cells"]][:2] == ["04-00", "04-01"]  # stable: reruns change outputs only
    assert [cell for cell in built["cells"] if "parameters" in cell["metadata"].get("tags", [])]
    stored = json.loads((ROOT / "notebooks" / "04_ablation_pas.ipynb").read_text())["cells"]
    assert ["".join(cell["source"]).rstrip("\n") for cell in built["cells"]] == [
        "".join(cell["source"]).rstrip("\n") for cell in stored]
