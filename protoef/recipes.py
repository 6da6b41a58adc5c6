"""The paper's recipe beside this project's, on the same data: runs, diagnostics, figures.

Notebook 09 uses this to show what the paper's losses do on the demo (every similarity
drifts towards 1, β flattens, the top prototype's label stops pointing at the answer) and
what the remedies of the demo profile change. Both recipes share the data, backbone,
budget and seeds; they differ only by `config.PAPER_RECIPE` (the remedies switched off).

Diagnostic columns come from each run's metrics.json (`protoef.diagnostics`, written by
every run) and history.csv (gradient norms per loss term, measured during training).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import companion
from .config import PAPER_RECIPE, REMEDIES

__all__ = ["recipes_for", "recipe_runs", "diagnostics_table", "gradient_shares", "attention_figure",
           "gradient_figure", "DIAGNOSTIC_COLUMNS"]

def recipes_for(profile: str) -> dict:
    """recipe name -> (run-name prefix, overrides on top of the profile). The demo and smoke
    profiles carry this project's recipe, so the paper's is the override; the paper profile
    carries the paper's, so the remedies are."""
    if profile == "paper":
        return {"paper recipe": ("protoefnet", {}), "with the remedies": ("remedies", REMEDIES)}
    return {"this project": ("protoefnet", {}), "paper recipe": ("paper-recipe", PAPER_RECIPE)}


DIAGNOSTIC_COLUMNS = ["mae", "mae_ratio_trivial", "push_mae_change", "sparsity", "top1_beta", "beta_entropy",
                      "top1_label_within_10", "top1_label_median_error", "similarity_gap", "distinct_sources",
                      "far_pair_angle", "far_pair_angle_initial", "pas_gradient_share"]


def recipe_runs(profile: str, seeds, overrides: dict | None = None, *, data=None) -> dict:
    """``{(recipe, seed): run directory}`` (`companion.seed_runs` per recipe); the "this
    project" runs are notebook 02's, so they are reused, not trained again."""
    return {(recipe, seed): run
            for recipe, (prefix, extra) in recipes_for(profile).items()
            for seed, run in companion.seed_runs(profile, prefix, seeds, {**(overrides or {}), **extra}, data=data).items()}


def gradient_shares(history: pd.DataFrame, *, target: str = "prototypes") -> pd.Series:
    """Per loss term, its share of the summed gradient norms on `target` ("prototypes" or
    "features"), averaged over epochs: which term drives that part of the model."""
    columns = [c for c in history.columns if c.startswith("train_grad_") and c.endswith(f"_{target}")]
    norms = history[columns].rename(columns=lambda c: c[len("train_grad_"):-len(f"_{target}")])
    return norms.div(norms.sum(axis=1).replace(0, np.nan), axis=0).mean()


def diagnostics_table(runs: dict, keys=("recipe", "seed")) -> pd.DataFrame:
    """One row per run: the headline test metrics after the push and every diagnostic."""
    rows = []
    for key, run in runs.items():
        run = pathlib.Path(run)
        metrics = json.loads((run / "metrics.json").read_text())
        stage = "post_push" if "post_push" in metrics["test"] else "final"
        test = metrics["test"][stage]
        row = {**dict(zip(keys, key if isinstance(key, tuple) else (key,))), **test}
        row["mae_ratio_trivial"] = test["mae"] / metrics["trivial"]["test_mae"]
        if "pre_push" in metrics["test"]:
            row["push_mae_change"] = test["mae"] - metrics["test"]["pre_push"]["mae"]
            row["distinct_sources"] = metrics["push"]["distinct_sources"]
            row["far_pair_angle_initial"] = metrics["initial"]["far_pair_angle"]
            row["pas_gradient_share"] = gradient_shares(pd.read_csv(run / "history.csv")).get("pas", np.nan)
        rows.append(row | {"run": str(run)})
    return pd.DataFrame(rows)


def _attention(run) -> dict:
    with np.load(pathlib.Path(run) / "test_attention.npz") as stored:
        return {name: stored[name] for name in stored.files}


def attention_figure(runs: dict) -> Figure:
    """β of every test video (rows, sorted by true EF) over the prototypes (columns, sorted
    by EF label), one panel per ``{title: run}``; the dots mark, per row, the prototype whose
    label is nearest the true EF (where a β that points at the answer would be bright)."""
    figure = Figure(figsize=(4.6 * len(runs), 4.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(runs)))
    attention = {title: _attention(run) for title, run in runs.items()}
    top = max(float(stored["weights"].max()) for stored in attention.values())  # one scale: flat reads as dark
    for ax, (title, stored) in zip(axes, attention.items()):
        rows, columns = np.argsort(stored["ef"], kind="stable"), np.argsort(stored["prototype_labels"], kind="stable")
        beta, labels, ef = stored["weights"][rows][:, columns], stored["prototype_labels"][columns], stored["ef"][rows]
        image = ax.imshow(beta, aspect="auto", cmap="magma", vmin=0, vmax=max(top, 1e-6), interpolation="nearest")
        nearest = np.abs(labels[None, :] - ef[:, None]).argmin(axis=1)
        ax.scatter(nearest, np.arange(len(ef)), s=2, color="cyan", alpha=0.6)
        ticks = np.unique(np.linspace(0, len(labels) - 1, min(6, len(labels))).round().astype(int))
        ax.set_xticks(ticks, [f"{labels[t]:.0f}" for t in ticks], fontsize=7)
        yticks = np.unique(np.linspace(0, len(ef) - 1, min(6, len(ef))).round().astype(int))
        ax.set_yticks(yticks, [f"{ef[t]:.0f}" for t in yticks], fontsize=7)
        ax.set(xlabel="prototype EF label (%)", ylabel="test video, true EF (%)")
        ax.set_title(f"{title}\nmean top-1 β {beta.max(axis=1).mean():.2f}", fontsize=9)
    figure.colorbar(image, ax=list(axes), label="β")
    return figure


def gradient_figure(histories: dict, *, target: str = "prototypes") -> Figure:
    """Per ``{title: history}``: each weighted loss term's gradient norm on `target` per epoch (log scale)."""
    figure = Figure(figsize=(4.6 * len(histories), 3.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(histories), sharey=True))
    for ax, (title, history) in zip(axes, histories.items()):
        for column in [c for c in history.columns if c.startswith("train_grad_") and c.endswith(f"_{target}")]:
            values = history[column].where(history[column] > 0)
            if values.notna().any():
                ax.plot(history["epoch"], values, marker=".", label=column[len("train_grad_"):-len(f"_{target}")])
        ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=f"gradient norm on the {target}", title=title)
        ax.legend(fontsize=7)
    return figure
