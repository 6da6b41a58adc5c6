"""What the paper-companion notebooks share: the profile switch, where runs and figures
live, and "train this run unless it is already there".

    profile, figures = notebook.setup(profile)     # the first line of every notebook

Profile switch. Every notebook's ``parameters`` cell reads ``PROTOEF_PROFILE`` (default
``demo``): ``./run_all.sh --profile P`` passes the profile to papermill explicitly, and the
notebook tests (``pytest notebooks/``, nbval) set ``PROTOEF_PROFILE=smoke`` in
``notebooks/conftest.py``, so CI runs every notebook as stored, in seconds.

Locations (all under the repository, none hard-coded elsewhere):
- runs: ``runs/<profile>-<name>/`` (layout: `protoef.training.runs`); a finished run (its
  ``metrics.json`` exists) is reused, an interrupted one resumed, a missing one trained,
  and a run whose stored config differs from the requested one is refused, naming the
  differing keys (never a stale run for changed parameters);
- figures: ``figures/`` for the demo profile (the committed figures), ``figures/<profile>/``
  for the others, so a CI smoke run never overwrites the committed demo figures;
- data: ``$PROTOEF_CACHE`` or ``.cache/`` (synthetic sets, decoded-video cache), or EchoNet-Dynamic from
  ``ECHONET_DIR`` / the ``data`` parameter for the paper profile.
"""
from __future__ import annotations

import json
import os
import pathlib

import pandas as pd

from ..config import PROFILES, Config, resolve
from ..training import runs
from ..training.build import data_root
from ..training.lifecycle import fit

__all__ = ["REPO", "setup", "profile_from_env", "config_for", "run_dir", "ensure_run", "figure_dir", "executed_dir", "tidy_executed", "read_run", "dataset_root"]

REPO = pathlib.Path(__file__).resolve().parents[2]  # the repository


def profile_from_env(default: str = "demo") -> str:
    return os.environ.get("PROTOEF_PROFILE", default)


def setup(profile: str | None = None) -> tuple[str, pathlib.Path]:
    """(profile, figure folder) for a notebook: the ``parameters`` cell's profile, or
    ``$PROTOEF_PROFILE`` (what ``./run_all.sh --profile`` and the notebook tests set), or "demo"."""
    source = "the notebook's profile parameter" if profile else "PROTOEF_PROFILE"
    profile = profile or profile_from_env()
    if profile not in PROFILES:  # before any folder is made for it
        raise ValueError(f"{source} = {profile!r}: expected one of {', '.join(sorted(PROFILES))}")
    figures = figure_dir(profile)
    _show_figures_inline()
    print(f"profile: {profile}; figures → {figures.relative_to(REPO) if figures.is_relative_to(REPO) else figures}")
    return profile, figures


def config_for(profile: str, overrides: dict | None = None, *, data: str | None = None) -> Config:
    """The profile's config with the repository's cache directory and optional data root."""
    values = {"data.cache_dir": os.environ.get("PROTOEF_CACHE", str(REPO / ".cache")), **(overrides or {})}
    if data:
        values["data.root"] = data
    return resolve(profile, values)


NOTEBOOK_DPI = 80  # figures embedded in the stored notebooks (figures/ keeps the PNGs at 100 dpi)


def _show_figures_inline() -> None:
    """Show a returned matplotlib Figure as a PNG in the notebook, and store it in the
    executed notebook (the package builds Figures without pyplot, which IPython would
    otherwise print as ``<Figure size …>``). Outside IPython: nothing to do."""
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        from matplotlib.figure import Figure

        shell.display_formatter.formatters["image/png"].for_type(
            Figure, lambda figure: print_figure(figure, "png", dpi=NOTEBOOK_DPI))


def run_dir(profile: str, name: str) -> pathlib.Path:
    return REPO / "runs" / f"{profile}-{name}"


def ensure_run(profile: str, name: str, overrides: dict | None = None, *, data: str | None = None,
               path=None) -> pathlib.Path:
    """The run directory of ``name`` for the resolved config of ``profile`` + ``overrides``:
    reused when finished, resumed when interrupted, trained otherwise. A run there with
    another config is refused with the differing keys named: changed parameters need
    another ``name`` (or the old run deleted). Where and how it runs (device, cache
    folder, loader workers, the same data folder spelled differently) does not count
    (`runs.is_runtime_difference`); another data folder does. ``path`` points at an existing run elsewhere (e.g. from a GPU box)."""
    out = pathlib.Path(path) if path else run_dir(profile, name)
    config = config_for(profile, overrides, data=data)
    run = runs.RunDir(out)
    resume = run.resumable
    if run.finished or resume:
        run.require_config(config.to_dict(), checkpoint="final" if run.finished else "last",
                           remedy="Give these settings another run name, or delete the run (./run_all.sh --force "
                                  "retrains every run)")
    if run.finished:
        return out
    fit(config, out, resume=resume)
    return out


def figure_dir(profile: str) -> pathlib.Path:
    folder = REPO / "figures" if profile == "demo" else REPO / "figures" / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def executed_dir(profile: str) -> pathlib.Path:
    """Where ``./run_all.sh`` keeps the executed notebooks: ``notebooks/`` itself for the
    demo profile (stored in the repository, outputs included), ``runs/<profile>/notebooks/``
    for the others."""
    return REPO / "notebooks" if profile == "demo" else REPO / "runs" / profile / "notebooks"


def tidy_executed(path) -> pathlib.Path:
    """Drop what only a live kernel can use from an executed notebook before it is stored:
    progress-bar widgets (their views and the widget state, over 1 MB for notebook 02) and
    the carriage-return progress lines of text bars. Every table, figure, print and
    warning stays. ``./run_all.sh`` calls this on each executed notebook."""
    path = pathlib.Path(path)
    notebook = json.loads(path.read_text())
    notebook.get("metadata", {}).pop("widgets", None)
    for cell in notebook.get("cells", []):
        if "outputs" in cell:  # code cells only
            cell["outputs"] = [output for output in cell["outputs"] if not _progress_output(output)]
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return path


def _progress_output(output: dict) -> bool:
    if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
        return True
    text = output.get("text", "")
    text = "".join(text) if isinstance(text, list) else text
    return output.get("output_type") == "stream" and text.startswith("\r")


def read_run(out) -> dict:
    """config, metrics, history and predictions of a finished run, as plain objects."""
    run = runs.RunDir(out)
    return {"config": run.read_config(), "metrics": run.read_metrics(), "history": run.read_history(),
            "predictions": run.read_predictions()}


def dataset_root(profile: str, *, data: str | None = None) -> pathlib.Path:
    """The data root of a profile (generates the synthetic set on first use)."""
    return data_root(config_for(profile, data=data))
