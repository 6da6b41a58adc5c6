"""Tables of finished runs for the notebooks: one row per run, means and intervals over
seeds, paired differences, per-stage metrics, IoU summaries. Inputs are run directories
(`protoef.training.runs` layout) or the tables built here; outputs are pandas DataFrames.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import get_key
from ..diagnostics import LOCAL_WINDOW, TOP1_WINDOW, far_near_angles
from ..metrics import bootstrap_paired_difference, regression_metrics
from ..training.runs import RunDir

__all__ = ["HEADLINE", "DIAGNOSTIC_COLUMNS", "METRIC_COLUMNS", "prototype_vectors", "run_table", "gradient_shares",
           "mean_std", "format_mean_std", "t_interval", "paired_seed_difference", "metrics_table", "compare_models",
           "iou_summary", "iou_per_prototype", "pick_by_quantile", "absolute_errors", "top1_hits", "beta_mass_near_truth",
           "iou_above_chance", "localization_summary"]

HEADLINE = ["mae", "rmse", "r2", "f1_40", "sparsity", "diversity"]
DIAGNOSTIC_COLUMNS = ["mae", "mae_ratio_trivial", "push_mae_change", "sparsity", "top1_beta", "beta_entropy",
                      "top1_label_within_10", "top1_label_median_error", "similarity_gap", "distinct_sources",
                      "far_pair_angle", "far_pair_angle_initial", "pas_gradient_share"]
METRIC_COLUMNS = ["mae", "rmse", "r2", "f1_40", "f1_50", "auroc_40", "mae_lt40", "mae_40_50", "mae_ge50", "sparsity",
                  "diversity"]


# --------------------------------------------------------------------------- one row per run
def prototype_vectors(run) -> tuple[np.ndarray, np.ndarray]:
    """(prototypes (P, D), labels (P,)) of a finished ProtoEFNet run after the push, read
    from its prototype artefacts (`RunDir.read_prototypes`)."""
    table, artefacts = RunDir(run).read_prototypes()
    vectors = [artefacts[int(j)]["feature"].astype(np.float64) for j in table["prototype"]]
    return np.stack(vectors), table["ef_label"].to_numpy(np.float64)


def gradient_shares(history: pd.DataFrame, *, target: str = "prototypes") -> pd.Series:
    """Per loss term, its share of the summed gradient norms on `target` ("prototypes" or
    "features"), averaged over epochs: which term drives that part of the model."""
    columns = [c for c in history.columns if c.startswith("train_grad_") and c.endswith(f"_{target}")]
    norms = history[columns].rename(columns=lambda c: c[len("train_grad_"):-len(f"_{target}")])
    return norms.div(norms.sum(axis=1).replace(0, np.nan), axis=0).mean()


def run_table(run_dirs: dict, keys=("seed",)) -> pd.DataFrame:
    """One row per run of ``{key: run directory}``: the key fields (`keys` name the parts
    of a tuple key), every TEST metric of the headline stage (after the push; "final" for
    the black box) and, for ProtoEFNet, the push, PAS and geometry columns:
    ``mae_ratio_trivial`` (÷ MAE of always predicting the training-mean EF),
    ``push_mae_change`` (after − before the push), ``distinct_sources``,
    ``far_pair_angle_initial``, ``angle_near`` (mean angle of pairs within Δl),
    ``rank_corr`` (`embeddings.label_angle_rank_correlation`), ``pas_gradient_share`` and
    ``beta_sharpening_factor`` (the final head's VAL-chosen factor; 1 when off)."""
    from ..analysis.embeddings import label_angle_rank_correlation

    rows = []
    for key, path in run_dirs.items():
        run = RunDir(path)
        metrics = run.read_metrics()
        stage = "post_push" if "post_push" in metrics["test"] else "final"
        test = metrics["test"][stage]
        row = {**dict(zip(keys, key if isinstance(key, tuple) else (key,))), **test}
        row["mae_ratio_trivial"] = test["mae"] / metrics["trivial"]["test_mae"]
        if "pre_push" in metrics["test"]:
            delta = get_key(run.read_config(), "loss.delta")
            prototypes, labels = prototype_vectors(run)
            row["push_mae_change"] = test["mae"] - metrics["test"]["pre_push"]["mae"]
            row["distinct_sources"] = metrics["push"]["distinct_sources"]
            row["far_pair_angle_initial"] = metrics["initial"]["far_pair_angle"]
            row["angle_near"] = far_near_angles(prototypes, labels, delta)[1]
            row["rank_corr"] = label_angle_rank_correlation(prototypes, labels)
            row["pas_gradient_share"] = gradient_shares(run.read_history()).get("pas", np.nan)
            # The final head's VAL-chosen sharpening factor (1: off; protoef.training.calibration):
            # chosen again after the push when the head was refitted there.
            sharpening = metrics.get("beta_sharpening_post_push", metrics.get("beta_sharpening", {}))
            row["beta_sharpening_factor"] = sharpening.get("factor", 1.0)
        rows.append(row | {"run": str(run)})
    return pd.DataFrame(rows)


def metrics_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """One row per stage (pre_push / post_push / final) of a run's metrics.json."""
    rows = {stage: {k: v for k, v in values.items() if k in METRIC_COLUMNS} for stage, values in metrics[split].items()}
    return pd.DataFrame(rows).T.reindex(columns=[c for c in METRIC_COLUMNS if any(c in r for r in rows.values())])


# --------------------------------------------------------------------------- over seeds
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


def t_interval(values, level: float = 0.95) -> dict:
    """Mean of `values` (NaNs dropped) with a Student-t interval over them, the replicates
    being seeds; NaN bounds with fewer than two values."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def paired_seed_difference(table: pd.DataFrame, metric: str, *, arm: str, a, b, level: float = 0.95) -> dict:
    """Mean over seeds of metric(a) − metric(b) for runs paired by seed, with a t interval
    (the seeds are the replicates); NaN interval with fewer than two pairs."""
    pivot = table.pivot_table(index="seed", columns=arm, values=metric)
    interval = t_interval((pivot[a] - pivot[b]).dropna(), level)
    return {"metric": metric, "difference": interval["mean"], "low": interval["low"], "high": interval["high"],
            "pairs": interval["n"]}


def compare_models(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame, *, names=("ProtoEFNet", "black box"),
                   metrics=("mae", "rmse", "r2", "f1_40"), n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Side-by-side test metrics of two models on the same videos, with the paired bootstrap
    difference (a − b), its 95 % CI and p-value."""
    merged = predictions_a.merge(predictions_b, on=["filename", "ef"], suffixes=("_a", "_b"))
    if not len(merged) == len(predictions_a) == len(predictions_b):
        raise ValueError("the two runs were tested on different videos; compare runs of the same data set")
    rows = []
    for metric in metrics:
        result = bootstrap_paired_difference(merged["ef"], merged["prediction_a"], merged["prediction_b"], metric, n=n, seed=seed)
        a = regression_metrics(merged["ef"], merged["prediction_a"])[metric]
        b = regression_metrics(merged["ef"], merged["prediction_b"])[metric]
        rows.append({"metric": metric, names[0]: a, names[1]: b, "difference": result.estimate,
                     "ci_low": result.low, "ci_high": result.high, "p_value": result.p_value})
    return pd.DataFrame(rows).set_index("metric")


# --------------------------------------------------------------------------- per TEST video
# Each returns a Series indexed by filename, the input of `intervals.per_video_grid`.
def absolute_errors(run) -> pd.Series:
    """|prediction − EF| per TEST video of a finished run (its predictions.csv)."""
    predictions = RunDir(run).read_predictions().set_index("filename")
    return (predictions["prediction"] - predictions["ef"]).abs()


def top1_hits(run, window: float = TOP1_WINDOW) -> pd.Series:
    """1.0 where the top-β prototype's label is within ±`window` EF points of the truth
    (inclusive), else 0.0, per TEST video (predictions.csv); its mean is ``top1_label_within_10``."""
    predictions = RunDir(run).read_predictions().set_index("filename")
    return ((predictions["top1_label"] - predictions["ef"]).abs() <= window).astype(np.float64)


def beta_mass_near_truth(run, window: float = LOCAL_WINDOW) -> pd.Series:
    """Per TEST video, the β mass on prototypes whose label is within ±`window` EF points of
    the truth (inclusive; test_attention.npz); its mean is ``beta_mass_within_10``."""
    stored = RunDir(run).read_attention()
    near = np.abs(stored["prototype_labels"][None, :] - stored["ef"][:, None]) <= window
    return pd.Series((stored["weights"] * near).sum(axis=1), index=stored["filename"].astype(str))


def iou_above_chance(table: pd.DataFrame) -> pd.Series:
    """Per video of an IoU table, the mean over its rows (prototypes, ED and ES) of IoU −
    q / (2 − q), q the LV's area fraction (`iou_summary`'s chance)."""
    above = table["iou"] - table["lv_fraction"] / (2 - table["lv_fraction"])
    return above.groupby(table["filename"]).mean()


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


def pick_by_quantile(efs, levels: dict) -> dict:
    """``{name: index}``: for each name the video whose EF is at quantile `levels[name]` of
    `efs` (0 = lowest, 1 = highest; nearest rank, ties by position)."""
    if not isinstance(levels, dict) or not levels:
        raise ValueError(f"examples / levels must be a dict {{name: quantile in [0, 1]}}, e.g. {{'low': 0.0, 'high': 1.0}}; "
                         f"got {levels!r}")
    bad = {name: q for name, q in levels.items()
           if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0}
    if bad:
        raise ValueError(f"examples / levels: quantile(s) {bad} are not numbers in [0, 1] (0 = lowest EF, 1 = highest)")
    efs = np.asarray(efs, np.float64)
    if not len(efs):
        raise ValueError("pick_by_quantile: no EF values to pick from (an empty split?)")
    order = np.argsort(efs, kind="stable")
    return {name: int(order[int(round(q * (len(efs) - 1)))]) for name, q in levels.items()}


def localization_summary(table: pd.DataFrame, by=("arm", "method")) -> pd.DataFrame:
    """Per `by` and traced frame, the three localisation measures against their chance
    levels, each a ratio of means (1 = chance): ``iou_over_chance`` (mean IoU ÷ mean
    q / (2 − q)), ``mass_over_fraction`` (mean LV mass share ÷ mean LV fraction q) and
    ``pointing_over_fraction`` (pointing-game hit rate ÷ mean q). With a ``seed`` column,
    the ratios are taken per seed and then averaged over seeds (column ``seeds``)."""
    table = table.assign(chance=table["lv_fraction"] / (2 - table["lv_fraction"]))
    keys = [*by, "frame"]
    per_seed = keys + (["seed"] if "seed" in table else [])
    means = table.groupby(per_seed)[["iou", "chance", "lv_mass_share", "pointing_hit", "lv_fraction"]].mean()
    ratios = pd.DataFrame({"iou_over_chance": means["iou"] / means["chance"],
                           "mass_over_fraction": means["lv_mass_share"] / means["lv_fraction"],
                           "pointing_over_fraction": means["pointing_hit"] / means["lv_fraction"]})
    summary = ratios.groupby(keys).mean()
    summary["seeds"] = ratios.groupby(keys).size()
    return summary
