"""The notebooks' two forms: the source a person edits and the executed copy a reader opens.

    python tools/notebooks.py build notebooks/02_train_protoefnet.py OUT.ipynb
        # the notebook papermill executes (run_all.sh calls this; the .py is only read)
    python tools/notebooks.py check            # exit 1 iff a stored .ipynb's cells differ from its .py
    python tools/notebooks.py sources [NN ...]  # rewrite the .py sources from the stored .ipynb cells

`notebooks/NN_name.py` (jupytext's percent format) is the source: code and markdown cells
only, so a diff of it shows code, never outputs. `notebooks/NN_name.ipynb` is the executed
demo copy that `./run_all.sh` writes and nbval runs (other profiles: runs/<profile>/notebooks/).
The pairing and the metadata filters live in notebooks/jupytext.toml, so JupyterLab with
jupytext keeps both forms in step when a notebook is edited there; `sources` does the same
for a notebook edited in a Jupyter without jupytext. `tests/test_structure.py` fails when
the two forms drift apart.

What is compared (`cells`): each cell's type, its text without trailing newlines (the percent
format spells a cell's trailing blank lines as the gap before the next cell, so it cannot
keep them) and whether it is the cell tagged `parameters` that papermill injects after.
Outputs and execution metadata are never compared: a newly executed .ipynb from any run
matches its source as long as nobody edited its code.
"""
from __future__ import annotations

import pathlib
import sys

import jupytext
import nbformat
from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FORMAT = "py:percent"
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}  # what papermill --kernel python3 runs


def config():
    """notebooks/jupytext.toml: the same pairing and filters JupyterLab applies."""
    path = find_jupytext_configuration_file(str(NOTEBOOKS))
    return load_jupytext_configuration_file(path) if path else None


def stored_notebooks() -> list[pathlib.Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def source_of(notebook: pathlib.Path) -> pathlib.Path:
    return notebook.with_suffix(".py")


def read_source(path) -> nbformat.NotebookNode:
    return jupytext.read(path, fmt=FORMAT, config=config())


def cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str, bool]]:
    return [(cell.cell_type, cell.source.rstrip("\n"), "parameters" in cell.metadata.get("tags", []))
            for cell in notebook.cells]


def difference(notebook: pathlib.Path) -> str | None:
    """None when the stored notebook's cells are its source's; else one line naming the first difference."""
    source = source_of(notebook)
    if not source.is_file():
        return f"{notebook.name} has no source {source.name}: run python tools/notebooks.py sources {notebook.stem[:2]}"
    stored, written = cells(nbformat.read(notebook, as_version=4)), cells(read_source(source))
    fix = (f"edit {source.name} and rerun ./run_all.sh --only {notebook.stem[:2]}, or, if the .ipynb holds "
           f"the wanted edit, python tools/notebooks.py sources {notebook.stem[:2]}")
    for index, (a, b) in enumerate(zip(stored, written)):
        if a != b:
            what = ("cell type" if a[0] != b[0] else "the parameters tag" if a[2] != b[2] else
                    f"line {first_differing_line(a[1], b[1])}")
            return f"{notebook.name} cell {index} ({a[0]}) differs from {source.name} in {what}: {fix}"
    if len(stored) != len(written):
        return f"{notebook.name} has {len(stored)} cells, {source.name} {len(written)}: {fix}"
    return None


def first_differing_line(a: str, b: str) -> int:
    a_lines, b_lines = a.splitlines(), b.splitlines()
    for number, (x, y) in enumerate(zip(a_lines, b_lines), start=1):
        if x != y:
            return number
    return min(len(a_lines), len(b_lines)) + 1


def build(source, out) -> pathlib.Path:
    """The unexecuted notebook of a .py source, with stable cell ids (NN-KK, so that a rerun
    changes only outputs) and the python3 kernel papermill is told to use."""
    source, out = pathlib.Path(source), pathlib.Path(out)
    notebook = read_source(source)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    if len(tagged) != 1:
        sys.exit(f"{source}: expected one cell tagged 'parameters' (papermill injects the parameters after it), "
                 f"found {len(tagged)}; tag it with '# %% tags=[\"parameters\"]'")
    for index, cell in enumerate(notebook.cells):
        cell.id = f"{source.stem[:2]}-{index:02d}"
    notebook.metadata = {"kernelspec": dict(KERNEL)}  # the pairing lives in notebooks/jupytext.toml, not here
    nbformat.write(notebook, out)
    return out


def write_source(notebook: pathlib.Path) -> pathlib.Path:
    """The .py source of a stored notebook, from its cells alone (no outputs, no execution metadata)."""
    stored = nbformat.read(notebook, as_version=4)
    for cell in stored.cells:
        cell.metadata = {"tags": ["parameters"]} if "parameters" in cell.metadata.get("tags", []) else {}
        cell.source = cell.source.rstrip("\n")
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    stored.metadata = {"kernelspec": dict(KERNEL)}
    path = source_of(notebook)
    jupytext.write(stored, path, fmt=FORMAT, config=config())
    return path


def chosen(numbers: list[str]) -> list[pathlib.Path]:
    paths = stored_notebooks()
    wanted = [path for path in paths if not numbers or path.stem[:2] in numbers]
    missing = sorted(set(numbers) - {path.stem[:2] for path in paths})
    if missing:
        sys.exit(f"no stored notebook numbered {', '.join(missing)} in {NOTEBOOKS}")
    return wanted


if __name__ == "__main__":
    command, arguments = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("check", [])
    if command == "build" and len(arguments) == 2:
        build(*arguments)
    elif command == "check":
        problems = [problem for path in stored_notebooks() if (problem := difference(path))]
        print("\n".join(problems) or f"{len(stored_notebooks())} notebooks match their .py sources")
        sys.exit(1 if problems else 0)
    elif command == "sources":
        for path in chosen(arguments):
            print(f"wrote {write_source(path).relative_to(ROOT)}")
    else:
        sys.exit("usage: python tools/notebooks.py build SOURCE.py OUT.ipynb | check | sources [NN ...]")
