"""The studies of notebooks 04–08: run sweeps (PAS ablation, τ × Δl sensitivity) and their
tables, the prototype-angle matrices, localisation summaries and example overlays, and the
small helpers those notebooks share (test set of a run, EF-range picks, smoke shrinking).

Runs are trained or reused through `protoef.companion.ensure_run`; a reused run whose stored
config differs from the requested one is an error naming the keys, so a sweep never mixes
runs of different budgets silently. Figures are built without pyplot, as in
`protoef.plots`.
"""
from __future__ import annotations

import math
import pathlib

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from . import companion
from .explain import model_input, overlay, take_clip, upsample_maps
from .localization import covering_clip_start, gradcam, occurrence_iou

__all__ = [
    "shrink_for_smoke", "ensure_matching_run", "run_sweep", "ablation_runs", "pas_weight_runs", "paired_seed_difference",
    "sensitivity_runs", "run_metrics", "mean_std",
    "format_mean_std", "prototype_vectors", "angle_matrix", "far_near_angles", "angle_matrix_figure",
    "label_gap_angle_figure", "embedding_figure", "sweep_heatmaps", "test_dataset", "test_loader",
    "pick_by_quantile", "iou_summary", "iou_per_prototype", "localization_examples", "image_figure",
]

HEADLINE = ["mae", "rmse", "r2", "f1_40", "sparsity", "diversity"]


# --------------------------------------------------------------------------- running sweeps

def shrink_for_smoke(profile: str, limits: dict, overrides: dict, **grid) -> tuple:
    """``(overrides, *grid values)``, replaced by `limits` when ``profile == "smoke"``.

    Keys of `limits` with a dot are config overrides (``"optim.epochs": 1``); the others
    replace the grid value of the same name (``"seeds": [0]``). Other profiles: unchanged."""
    overrides = dict(overrides)
    if profile == "smoke":
        overrides.update({k: v for k, v in limits.items() if "." in k})
        grid = {name: limits.get(name, values) for name, values in grid.items()}
    return (overrides, *grid.values())


def ensure_matching_run(profile: str, name: str, overrides: dict, *, data=None) -> pathlib.Path:
    """`companion.ensure_run`, which matches a run by its whole resolved config (a run of
    the same name trained with other settings is an error naming the keys, not a reuse)."""
    return companion.ensure_run(profile, name, overrides, data=data)


def run_sweep(profile: str, planned: dict, *, data=None, executor="auto") -> dict:
    """``{key: (run name, overrides)}`` → ``{key: run directory}``: the runs not finished yet
    are trained by `protoef.sweeps.run_jobs` with `executor` ("auto": one process per GPU
    when several are visible, else one after the other here), then each is checked with
    `ensure_matching_run`. A finished run with other settings is refused before anything trains."""
    from . import sweeps

    todo = []
    for name, values in planned.values():
        if (companion.run_dir(profile, name) / "metrics.json").is_file():
            ensure_matching_run(profile, name, values, data=data)  # reused: check it now
        else:
            todo.append(sweeps.Job(profile, name, values, data=data))
    if todo and sweeps.resolve_executor(executor)["kind"] != "sequential":
        sweeps.run_jobs(todo, executor)
    return {key: ensure_matching_run(profile, name, values, data=data) for key, (name, values) in planned.items()}


def ablation_runs(profile: str, seeds, overrides: dict, *, data=None, executor="auto") -> dict:
    """ProtoEFNet with (``pas-seed{s}``) and without PAS (``nopas-seed{s}``, ``loss.pas = 0``)
    per seed. Returns ``{(arm, seed): run directory}`` with arms "PAS" and "no PAS".
    ``executor``: how the runs are launched (`run_sweep`, `protoef.sweeps`)."""
    runs = {}
    for seed in seeds:
        for arm, name, extra in (("PAS", "pas", {}), ("no PAS", "nopas", {"loss.pas": 0.0})):
            runs[(arm, seed)] = (f"{name}-seed{seed}", {**overrides, "seed": seed, **extra})
    return run_sweep(profile, runs, data=data, executor=executor)


def sensitivity_runs(profile: str, taus, deltas, overrides: dict, *, data=None, executor="auto") -> dict:
    """One run per (τ, Δl) (``model.tau``, ``loss.delta``), named ``tau{τ}-delta{Δl}``.
    Returns ``{(tau, delta): run directory}``. ``executor``: as in `ablation_runs`."""
    return run_sweep(profile, {(tau, delta): (f"tau{tau:g}-delta{delta:g}",
                                              {**overrides, "model.tau": float(tau), "loss.delta": float(delta)})
                               for tau in taus for delta in deltas}, data=data, executor=executor)


def pas_weight_runs(profile: str, weights, seeds, overrides: dict, *, data=None, sweep_seeds=None,
                    executor="auto") -> dict:
    """ProtoEFNet per PAS weight (``loss.pas``) and seed: ``{(weight, seed): run directory}``.

    The profile's own weight with no overrides is notebook 02's run (``protoefnet-seed{s}``),
    reused; other weights are ``pas{w}-seed{s}``. `sweep_seeds` (default: `seeds`) are the
    seeds of the weights other than 0 and the profile's own (the ablation arms get all).
    ``executor``: how the runs are launched (`run_sweep`, `protoef.sweeps`)."""
    default = companion.config_for(profile).loss.pas
    planned = {}
    for weight in weights:
        arm_seeds = seeds if weight in (0.0, default) else (sweep_seeds or seeds)
        name = "protoefnet" if weight == default and not overrides else f"pas{weight:g}"
        for seed in arm_seeds:
            planned[(weight, seed)] = (f"{name}-seed{seed}", {**overrides, "loss.pas": float(weight), "seed": seed})
    return run_sweep(profile, planned, data=data, executor=executor)


def paired_seed_difference(table: pd.DataFrame, metric: str, *, arm: str, a, b, level: float = 0.95) -> dict:
    """Mean over seeds of metric(a) − metric(b) for runs paired by seed, with a t interval
    (the seeds are the replicates); NaN interval with fewer than two pairs."""
    from scipy import stats

    pivot = table.pivot_table(index="seed", columns=arm, values=metric)
    differences = (pivot[a] - pivot[b]).dropna()
    n, mean = len(differences), float(differences.mean())
    if n < 2:
        return {"metric": metric, "difference": mean, "low": math.nan, "high": math.nan, "pairs": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * differences.std(ddof=1) / math.sqrt(n))
    return {"metric": metric, "difference": mean, "low": mean - half, "high": mean + half, "pairs": n}


# --------------------------------------------------------------------------- tables

def run_metrics(runs: dict, keys=("arm", "seed"), *, split: str = "test", stage: str = "post_push") -> pd.DataFrame:
    """One row per run: its key fields, the `split`/`stage` metrics of metrics.json and the
    prototype geometry (``angle_far`` / ``angle_near``: mean angle in degrees between
    prototypes whose labels differ by more / at most Δl; ``rank_corr``: `label_angle_rank_correlation`)."""
    from .embeddings import label_angle_rank_correlation

    rows = []
    for key, run in runs.items():
        results = companion.read_run(run)
        prototypes, labels = prototype_vectors(run)
        far, near = far_near_angles(prototypes, labels, results["config"]["loss"]["delta"])
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                     **results["metrics"][split][stage], "angle_far": far, "angle_near": near,
                     "rank_corr": label_angle_rank_correlation(prototypes, labels), "run": str(run)})
    return pd.DataFrame(rows)


def mean_std(table: pd.DataFrame, by, metrics=HEADLINE) -> pd.DataFrame:
    """Mean and sample std (ddof 1; NaN for a single run) of `metrics` per group `by`;
    columns (metric, "mean"/"std") plus ("n", "") the number of runs. NaNs are skipped."""
    grouped = table.groupby(by, sort=False)
    summary = grouped[list(metrics)].agg(["mean", "std"])
    summary[("n", "")] = grouped.size()
    return summary


def format_mean_std(summary: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """`mean_std` output as "mean ± std" strings (just the mean when std is NaN)."""
    metrics = [m for m in summary.columns.get_level_values(0).unique() if m != "n"]
    out = pd.DataFrame(index=summary.index)
    for m in metrics:
        mean, std = summary[(m, "mean")], summary[(m, "std")]
        out[m] = [f"{a:.{digits}f}" + ("" if math.isnan(b) else f" ± {b:.{digits}f}") for a, b in zip(mean, std)]
    out["n"] = summary[("n", "")].astype(int)
    return out


# --------------------------------------------------------------------------- prototype geometry

def prototype_vectors(run) -> tuple[np.ndarray, np.ndarray]:
    """(prototypes (P, D), labels (P,)) of a run's final (pushed) ProtoEFNet."""
    from .train import load_run_model

    model, _ = load_run_model(run)
    return model.prototypes.detach().double().numpy(), model.prototype_labels.double().numpy()


def angle_matrix(prototypes, labels) -> tuple[np.ndarray, np.ndarray]:
    """Angles in degrees between prototype vectors (P, P), rows and columns ordered by EF
    label (stable), and the sorted labels."""
    p, l = np.asarray(prototypes, np.float64), np.asarray(labels, np.float64)
    order = np.argsort(l, kind="stable")
    unit = p[order] / np.maximum(np.linalg.norm(p[order], axis=1, keepdims=True), 1e-12)
    # 2·atan2(|u − v|, |u + v|): exact near 0° and 180°, where arccos(u·v) loses digits
    difference = np.linalg.norm(unit[:, None] - unit[None], axis=-1)
    total = np.linalg.norm(unit[:, None] + unit[None], axis=-1)
    return np.degrees(2 * np.arctan2(difference, total)), l[order]


def far_near_angles(prototypes, labels, delta: float) -> tuple[float, float]:
    """Mean angle (degrees) over pairs j < k with |l_j − l_k| > Δl ("far", what PAS pushes
    apart) and with |l_j − l_k| ≤ Δl ("near"); NaN for an empty group."""
    angles, l = angle_matrix(prototypes, labels)
    j, k = np.triu_indices(len(l), k=1)
    far = np.abs(l[j] - l[k]) > delta
    values = angles[j, k]
    return (float(values[far].mean()) if far.any() else math.nan,
            float(values[~far].mean()) if (~far).any() else math.nan)


def angle_matrix_figure(arms: dict, *, delta: float | None = None) -> Figure:
    """Side-by-side angle matrices (shared 0–180° scale) for ``{title: (prototypes, labels)}``,
    axes labelled by EF label; with `delta`, the mean far/near angles go into each title."""
    figure = Figure(figsize=(4.3 * len(arms) + 0.6, 4.0), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(arms)))
    for ax, (title, (prototypes, labels)) in zip(axes, arms.items()):
        angles, ordered = angle_matrix(prototypes, labels)
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
    from .embeddings import label_angle_rank_correlation

    angles, l = angle_matrix(prototypes, labels)
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
    from .embeddings import embed_with_prototypes
    from .plots import embedding_scatter

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


# --------------------------------------------------------------------------- data of a run

def test_dataset(config, split: str = "TEST", *, with_masks: bool = False):
    """The EchoNet split of a run's config with its clips, size and normalisation (the
    training pipeline's test set; ``with_masks`` adds the LV tracings for the IoU tables)."""
    from .train import split_dataset

    return split_dataset(config, split, clips=config.data.test_clips, with_masks=with_masks,
                         background_dilation=config.data.background_dilation)


def test_loader(config, dataset=None):
    """A DataLoader over `dataset` (default: `test_dataset`) as the training engine builds it."""
    from .train import _loader

    return _loader(dataset if dataset is not None else test_dataset(config), config)


def pick_by_quantile(efs, levels: dict) -> dict:
    """``{name: index}``: for each name the video whose EF is at quantile `levels[name]` of
    `efs` (0 = lowest, 1 = highest; nearest rank, ties by position)."""
    efs = np.asarray(efs, np.float64)
    order = np.argsort(efs, kind="stable")
    return {name: int(order[int(round(q * (len(efs) - 1)))]) for name, q in levels.items()}


# --------------------------------------------------------------------------- localisation

def iou_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and traced frame: mean, median and std of the IoU, rows, and ``chance``:
    the expected IoU of a map picking the LV's area at random, q / (2 − q) for LV fraction q."""
    table = table.assign(chance=table["lv_fraction"] / (2 - table["lv_fraction"]))
    grouped = table.groupby(["method", "frame"])
    summary = grouped["iou"].agg(["mean", "median", "std", "count"])
    summary["chance"] = grouped["chance"].mean()
    return summary


def iou_per_prototype(table: pd.DataFrame, labels=None) -> pd.DataFrame:
    """Mean occurrence-map IoU per prototype (rows) and traced frame (columns), plus "all";
    with `labels` (P,), an ``ef_label`` column, rows sorted by it."""
    occurrence = table[table["method"] == "occurrence"]
    out = occurrence.pivot_table(index="prototype", columns="frame", values="iou", aggfunc="mean")
    out["all"] = occurrence.groupby("prototype")["iou"].mean()
    if labels is not None:
        out.insert(0, "ef_label", np.asarray(labels)[out.index.to_numpy()])
        out = out.sort_values("ef_label", kind="stable")
    return out


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
