"""The notebooks' figures of the data set, finished runs, studies and localisation (notebook 08's
prototype gallery and local explanations are drawn by `protoef.analysis.explain`).

Like `protoef.analysis.plots` (the drawing primitives), every function builds a
`matplotlib.figure.Figure` without pyplot (nothing to close, headless-safe); a returned
Figure displays itself in a notebook and `plots.save_figure` writes it.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..analysis.explain import model_input, take_clip, upsample_maps
from ..analysis.faithfulness import shown_prototype_rows
from ..analysis.localization import covering_clip_start, gradcam, occurrence_iou
from ..analysis.plots import embedding_scatter, overlay
from ..data import EchoNet, read_file_list
from ..diagnostics import far_near_angles, pairwise_angles
from ..metrics import regression_metrics
from ..training.runs import RunDir

__all__ = ["ef_histograms", "example_frames", "volume_curve", "learning_curves", "prediction_scatter", "bland_altman",
           "angle_matrix_figure", "label_gap_angle_figure", "embedding_figure", "sweep_heatmaps",
           "localization_examples", "localization_by_arm_figure", "faithfulness_figure", "image_figure",
           "attention_figure", "gradient_figure"]

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


# --------------------------------------------------------------------------- prototype geometry
def _sorted_angles(prototypes, labels) -> tuple[np.ndarray, np.ndarray]:
    """Angles (P, P) with rows and columns ordered by EF label (stable), and the sorted labels."""
    labels = np.asarray(labels, np.float64)
    order = np.argsort(labels, kind="stable")
    return pairwise_angles(np.asarray(prototypes, np.float64)[order]), labels[order]


def angle_matrix_figure(arms: dict, *, delta: float | None = None) -> Figure:
    """Side-by-side angle matrices (shared 0–180° scale) for ``{title: (prototypes, labels)}``,
    axes labelled by EF label; with `delta`, the mean far/near angles go into each title."""
    figure = Figure(figsize=(4.3 * len(arms) + 0.6, 4.0), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(arms)))
    for ax, (title, (prototypes, labels)) in zip(axes, arms.items()):
        angles, ordered = _sorted_angles(prototypes, labels)
        image = ax.imshow(angles, cmap="magma", vmin=0, vmax=180)
        ticks = np.unique(np.linspace(0, len(ordered) - 1, min(8, len(ordered))).round().astype(int))
        ax.set_xticks(ticks, [f"{ordered[t]:.0f}" for t in ticks], fontsize=7)
        ax.set_yticks(ticks, [f"{ordered[t]:.0f}" for t in ticks], fontsize=7)
        ax.set(xlabel="prototype EF label (%)", ylabel="prototype EF label (%)")
        if delta is not None:
            far, near = far_near_angles(prototypes, labels, delta)
            title = f"{title}\nmean angle: |Δl|>{delta:g}: {far:.1f}°, ≤{delta:g}: {near:.1f}°"
        ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=list(axes), label="angle between prototypes (°)")
    return figure


def label_gap_angle_figure(prototypes, labels, *, title: str = "") -> Figure:
    """Every prototype pair: label distance |l_j − l_k| against angle, with the Spearman ρ."""
    from ..analysis.embeddings import label_angle_rank_correlation

    angles, l = _sorted_angles(prototypes, labels)
    j, k = np.triu_indices(len(l), k=1)
    figure = Figure(figsize=(4.6, 3.6), layout="constrained")
    ax = figure.subplots()
    ax.scatter(np.abs(l[j] - l[k]), angles[j, k], s=10, alpha=0.6)
    rho = label_angle_rank_correlation(prototypes, labels)
    ax.set(xlabel="|label difference| (EF points)", ylabel="angle (°)",
           title=f"{title}\nSpearman ρ = {rho:.3f} over {len(j)} pairs".strip())
    return figure


def embedding_figure(pooled, prototypes, labels, methods=("tsne", "umap"), *, seed: int = 0) -> Figure:
    """One panel per method: `embeddings.embed_with_prototypes` drawn by `plots.embedding_scatter`."""
    from ..analysis.embeddings import embed_with_prototypes

    figure = Figure(figsize=(5.2 * len(methods), 4.2), layout="constrained")
    for ax, method in zip(np.atleast_1d(figure.subplots(1, len(methods))), methods):
        table = embed_with_prototypes(pooled, prototypes, labels, method=method, seed=seed)
        embedding_scatter(table, ax=ax, title=f"{method.upper()}: test videos (top-β feature) and prototypes")
    return figure


def sweep_heatmaps(table: pd.DataFrame, metrics=("mae", "f1_40", "sparsity", "diversity"), *,
                   rows: str = "tau", columns: str = "delta") -> Figure:
    """One annotated heatmap per metric over the `rows` × `columns` grid (mean if repeated)."""
    import seaborn as sns

    figure = Figure(figsize=(3.6 * len(metrics), 3.2), layout="constrained")
    for ax, metric in zip(np.atleast_1d(figure.subplots(1, len(metrics))), metrics):
        grid = table.pivot_table(index=rows, columns=columns, values=metric, aggfunc="mean", dropna=False)
        sns.heatmap(grid.astype(float), annot=True, fmt=".2f", cmap="rocket_r" if metric == "mae" else "rocket",
                    cbar=False, ax=ax)
        ax.set_title(metric, fontsize=10)
    return figure


# --------------------------------------------------------------------------- localisation
def localization_examples(model, blackbox, dataset, indices, *, frame: str = "ED", gradcam_layers=(None,)) -> Figure:
    """Per video (rows): the traced `frame` with the LV outline; ProtoEFNet's occurrence map
    of its top-β prototype; the black box's Grad-CAM at each of `gradcam_layers` (None: the
    default layer4). Each map is min–max scaled for display; titles give the IoU of
    `localization.occurrence_iou` (top-q rule)."""
    columns = 2 + len(gradcam_layers)
    figure = Figure(figsize=(2.35 * columns, 2.4 * len(indices)), layout="constrained")
    axes = figure.subplots(len(indices), columns, squeeze=False)
    for row, index in zip(axes, indices):
        video, masks = dataset.frames(index), dataset.masks(index)
        traced, mask = int(masks[f"{frame.lower()}_frame"]), masks[f"{frame.lower()}_mask"]
        start = covering_clip_start(len(video), [traced], clip_length=dataset.clip_length, period=dataset.period)
        clip = take_clip(video, start, dataset.clip_length, dataset.period)
        x = model_input(clip, dataset)[None]
        with torch.no_grad():
            output = model.eval()(x)
        j = int(output.weights[0].argmax())
        maps = {f"occurrence, prototype {j}": output.occurrence_maps[0, j].float().numpy()}
        for layer in gradcam_layers:
            maps[f"Grad-CAM black box{f', {layer}' if layer else ''}"] = gradcam(blackbox, x, layer=layer)[0].float().numpy()
        k = min(max(int(round((traced - start) / dataset.period)), 0), len(clip) - 1)
        row[0].imshow(clip[k], cmap="gray", vmin=0, vmax=255)
        row[0].set_title(f"{dataset.filenames[index][:12]}… {frame}\nEF {dataset.records[index].ef:.1f}%", fontsize=8)
        for ax, (name, heat) in zip(row[1:], maps.items()):
            iou = occurrence_iou(heat, mask, traced, clip_start=start, clip_length=dataset.clip_length,
                                 period=dataset.period)
            ax.imshow(overlay(clip[k], upsample_maps(heat, clip.shape)[k], normalize=True))
            ax.set_title(f"{name}\nIoU {float(np.ravel(iou)[0]):.2f}", fontsize=8)
        for ax in row:
            ax.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
            ax.set_axis_off()
    return figure


def localization_by_arm_figure(summary: pd.DataFrame) -> Figure:
    """Bars of `tables.localization_summary`'s ratios (1 = chance, dotted) per (arm, method),
    ED and ES side by side, one panel per measure."""
    measures = {"iou_over_chance": "IoU ÷ chance", "mass_over_fraction": "LV mass share ÷ LV fraction",
                "pointing_over_fraction": "pointing hits ÷ LV fraction"}
    groups = list(dict.fromkeys((arm, method) for arm, method, _ in summary.index))
    figure = Figure(figsize=(4.2 * len(measures), 3.4), layout="constrained")
    for ax, (column, title) in zip(figure.subplots(1, len(measures), squeeze=False)[0], measures.items()):
        for offset, frame in zip((-0.2, 0.2), ("ED", "ES")):
            heights = [summary[column].get((arm, method, frame), np.nan) for arm, method in groups]
            ax.bar(np.arange(len(groups)) + offset, heights, width=0.4, label=frame)
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(groups)), [f"{arm}\n{method}" for arm, method in groups], fontsize=7, rotation=30, ha="right")
        ax.set(title=title, ylabel="× chance")
        ax.legend(fontsize=8)
    return figure


def faithfulness_figure(deletion: pd.DataFrame, randomization: pd.DataFrame) -> Figure:
    """Left: per arm, mean similarity drop when the top cells are hidden ÷ when random cells are
    (target 3, dashed), one bar per share of cells hidden (`deletion`'s column fraction) and per
    set of prototypes (each clip's top-β ones, as the claim, and every prototype).
    Right: mean Spearman ρ of randomised against trained maps per cascade step, one line per
    kind of map (0.5, dashed)."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = figure.subplots(1, 2)
    arms = list(dict.fromkeys(deletion["arm"]))
    bars = []  # (label, ratio per arm)
    for fraction, rows in deletion.groupby("fraction", sort=False):
        shown = pd.concat([shown_prototype_rows(part) for _, part in rows.groupby("arm", sort=False)])
        cells = int(rows["cells"].iloc[0])
        for subset, chosen in (("top-β", shown), ("all", rows)):
            means = chosen.groupby("arm")[["drop_top", "drop_random"]].mean().reindex(arms)
            bars.append((f"{fraction:.0%} ({cells} cells), {subset}", means["drop_top"] / means["drop_random"]))
    width = 0.8 / len(bars)
    for index, (label, ratios) in enumerate(bars):
        left.bar(np.arange(len(arms)) + (index - (len(bars) - 1) / 2) * width, ratios.to_numpy(), width, label=label)
    left.axhline(3.0, color="grey", linestyle="--", linewidth=1)
    left.set_xticks(range(len(arms)), arms, fontsize=8, rotation=20, ha="right")
    left.set(title="Deletion test", ylabel="top-cell drop ÷ random-cell drop")
    left.legend(fontsize=7, title="cells hidden per slot, prototypes", title_fontsize=7)
    for kind, rows in randomization.groupby("maps", sort=False):
        curve = rows.groupby("step")["spearman"].mean()
        right.plot(curve.index, curve.to_numpy(), marker="o", label=kind)
    right.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    right.set(title="Cascading randomisation, from the top", xlabel="layers re-initialised − 1 (step)",
              ylabel="Spearman ρ with the trained maps", ylim=(-1.05, 1.05))
    right.legend(fontsize=8)
    return figure


def image_figure(path, *, title: str | None = None, width: float = 10.0) -> Figure:
    """A stored PNG (e.g. a run's prototypes/gallery.png) as a Figure, to show and re-save."""
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    figure = Figure(figsize=(width, width * image.shape[0] / image.shape[1] + (0.3 if title else 0)), layout="constrained")
    ax = figure.subplots()
    ax.imshow(image)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return figure


# --------------------------------------------------------------------------- the two recipes
def attention_figure(runs: dict) -> Figure:
    """β of every test video (rows, sorted by true EF) over the prototypes (columns, sorted
    by EF label), one panel per ``{title: run}``; the dots mark, per row, the prototype whose
    label is nearest the true EF (where a β that points at the answer would be bright)."""
    figure = Figure(figsize=(4.6 * len(runs), 4.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(runs)))
    attention = {title: RunDir(run).read_attention() for title, run in runs.items()}
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
