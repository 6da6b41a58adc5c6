"""Figures and tables of the data set and of finished runs, for the notebooks.

Like `protoef.plots`, every function builds a `matplotlib.figure.Figure` without pyplot
(nothing to close, headless-safe); a returned Figure displays itself in a notebook and
`protoef.plots.save_figure` writes it.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .data import EchoNet, read_file_list
from .metrics import bootstrap_paired_difference, regression_metrics

__all__ = ["ef_histograms", "example_frames", "volume_curve", "learning_curves", "prediction_scatter",
           "bland_altman", "metrics_table", "compare_models"]

SPLIT_COLOURS = {"TRAIN": "tab:blue", "VAL": "tab:orange", "TEST": "tab:green"}


def ef_histograms(root) -> Figure:
    """EF distribution per split, with the 40 % and 50 % thresholds."""
    table = read_file_list(root)
    figure = Figure(figsize=(7, 3.2), layout="constrained")
    ax = figure.add_subplot()
    bins = np.arange(0, 101, 2.5)
    for split, colour in SPLIT_COLOURS.items():
        values = table.loc[table["Split"] == split, "EF"].dropna()
        ax.hist(values, bins=bins, histtype="step", linewidth=1.6, color=colour, density=True,
                label=f"{split} (n={len(values)}, {values.mean():.1f} ± {values.std():.1f})")
    for threshold in (40, 50):
        ax.axvline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="EF (%)", ylabel="density", title="Ejection fraction per split")
    ax.legend(fontsize=8)
    return figure


def example_frames(dataset: EchoNet, indices) -> Figure:
    """For each video: its ED and ES frames with the traced LV outline (dataset with masks)."""
    figure = Figure(figsize=(2.2 * 2 * len(indices), 2.6), layout="constrained")
    axes = figure.subplots(1, 2 * len(indices), squeeze=False)[0]
    for column, index in enumerate(indices):
        frames, masks = dataset.frames(index), dataset.masks(index)
        for offset, kind in enumerate(("ed", "es")):
            ax = axes[2 * column + offset]
            ax.imshow(frames[min(masks[f"{kind}_frame"], len(frames) - 1)], cmap="gray", vmin=0, vmax=255)
            ax.contour(masks[f"{kind}_mask"], levels=[0.5], colors="yellow", linewidths=1)
            ax.set_title(f"{dataset.filenames[index][:10]}… {kind.upper()}\nEF {dataset.records[index].ef:.1f}%", fontsize=8)
            ax.set_axis_off()
    return figure


def volume_curve(root, filename: str, fps: float | None = None) -> Figure | None:
    """LV volume over time from the synthetic set's per-frame side file (``LVMasks``);
    None for EchoNet-Dynamic, which traces two frames only."""
    path = pathlib.Path(root) / "LVMasks" / f"{pathlib.Path(filename).stem}.npz"
    if not path.is_file():
        return None
    volume_ml = np.load(path)["volume_ml"]
    time = np.arange(len(volume_ml)) / (fps or 1.0)
    figure = Figure(figsize=(7, 2.6), layout="constrained")
    ax = figure.add_subplot()
    ax.plot(time, volume_ml, color="black")
    ed, es = int(volume_ml.argmax()), int(volume_ml.argmin())
    ax.scatter([time[ed], time[es]], [volume_ml[ed], volume_ml[es]], color=["tab:red", "tab:blue"], zorder=3)
    ef = 100 * (volume_ml.max() - volume_ml.min()) / volume_ml.max()
    ax.set(xlabel="time (s)" if fps else "frame", ylabel="LV volume (mL)",
           title=f"{filename}: volume curve (EF from the curve {ef:.1f}%)")
    return figure


def learning_curves(history: pd.DataFrame) -> Figure:
    """Training loss terms and validation MAE / R² per epoch."""
    figure = Figure(figsize=(10, 3), layout="constrained")
    loss_ax, mae_ax, r2_ax = figure.subplots(1, 3)
    for column in [c for c in history.columns if c.startswith("train_") and c != "train_loss"]:
        values = history[column]
        if np.isfinite(values).all() and (values != 0).any():
            loss_ax.plot(history["epoch"], values / max(abs(values).max(), 1e-12), label=column[6:])
    loss_ax.plot(history["epoch"], history["train_loss"] / history["train_loss"].abs().max(), "k", linewidth=2, label="total")
    loss_ax.set(title="training terms (each / its max)", xlabel="epoch")
    loss_ax.legend(fontsize=7)
    mae_ax.plot(history["epoch"], history["val_mae"], marker="o")
    mae_ax.set(title="validation MAE (EF points)", xlabel="epoch")
    r2_ax.plot(history["epoch"], history["val_r2"], marker="o", color="tab:green")
    r2_ax.set(title="validation R²", xlabel="epoch")
    return figure


def prediction_scatter(predictions: pd.DataFrame, *, title: str = "") -> Figure:
    """Predicted vs true EF with the identity line and the 40/50 % thresholds."""
    figure = Figure(figsize=(4.2, 4.2), layout="constrained")
    ax = figure.add_subplot()
    ax.scatter(predictions["ef"], predictions["prediction"], s=14, alpha=0.7)
    ax.plot([0, 100], [0, 100], color="black", linewidth=1)
    for threshold in (40, 50):
        ax.axvline(threshold, color="grey", linestyle=":", linewidth=1)
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    m = regression_metrics(predictions["ef"], predictions["prediction"])
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="true EF (%)", ylabel="predicted EF (%)",
           title=f"{title}\nMAE {m['mae']:.2f} · RMSE {m['rmse']:.2f} · R² {m['r2']:.3f}")
    return figure


def bland_altman(predictions: pd.DataFrame, *, title: str = "") -> Figure:
    """Difference (predicted − true) against the mean, with bias and 95 % limits of agreement."""
    mean = (predictions["ef"] + predictions["prediction"]) / 2
    difference = predictions["prediction"] - predictions["ef"]
    bias, spread = difference.mean(), 1.96 * difference.std(ddof=1)
    figure = Figure(figsize=(5, 3.6), layout="constrained")
    ax = figure.add_subplot()
    ax.scatter(mean, difference, s=14, alpha=0.7)
    for value, style in ((bias, "-"), (bias - spread, "--"), (bias + spread, "--")):
        ax.axhline(value, color="black", linestyle=style, linewidth=1)
    ax.set(xlabel="mean of true and predicted EF (%)", ylabel="predicted − true (EF points)",
           title=f"{title}\nbias {bias:+.2f}, limits of agreement ±{spread:.2f}")
    return figure


METRIC_COLUMNS = ["mae", "rmse", "r2", "f1_40", "f1_50", "auroc_40", "mae_lt40", "mae_40_50", "mae_ge50", "sparsity", "diversity"]


def metrics_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """One row per stage (pre_push / post_push / final) of a run's metrics.json."""
    rows = {stage: {k: v for k, v in values.items() if k in METRIC_COLUMNS} for stage, values in metrics[split].items()}
    return pd.DataFrame(rows).T.reindex(columns=[c for c in METRIC_COLUMNS if any(c in r for r in rows.values())])


def compare_models(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame, *, names=("ProtoEFNet", "black box"),
                   metrics=("mae", "rmse", "r2", "f1_40"), n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Side-by-side test metrics of two models on the same videos, with the paired bootstrap
    difference (a − b), its 95 % CI and p-value."""
    merged = predictions_a.merge(predictions_b, on=["filename", "ef"], suffixes=("_a", "_b"))
    if len(merged) != len(predictions_a):
        raise ValueError("the two runs were tested on different videos; compare runs of the same data set")
    rows = []
    for metric in metrics:
        result = bootstrap_paired_difference(merged["ef"], merged["prediction_a"], merged["prediction_b"], metric, n=n, seed=seed)
        a = regression_metrics(merged["ef"], merged["prediction_a"])[metric]
        b = regression_metrics(merged["ef"], merged["prediction_b"])[metric]
        rows.append({"metric": metric, names[0]: a, names[1]: b, "difference": result.estimate,
                     "ci_low": result.low, "ci_high": result.high, "p_value": result.p_value})
    return pd.DataFrame(rows).set_index("metric")
