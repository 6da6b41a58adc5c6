"""Percentile intervals over seeds *and* TEST videos (docs/method.md §6, "Seeds and intervals").

A study's per-video values form a seeds × videos grid per arm: every run of a study is
tested on the same TEST videos, so seeds and videos are crossed, not nested. The two-stage
bootstrap here draws, per replicate, the seeds with replacement and then the videos with
replacement, once each, and evaluates the statistic on the resampled grid of every arm:

- the same resampled seeds and videos for every arm, so a difference between arms is
  paired both by seed (shared initial weights, data order) and by video (shared difficulty);
- a mean of values in [0, 1] stays in [0, 1] in every replicate, so the interval of a share
  (the pointing game, the top-1 label within ±10 EF) cannot leave [0, 1] as a Student-t
  interval over a handful of seeds can;
- both sources of variation count: seed to seed (training noise) and video to video (which
  TEST set was drawn). With one seed the seed stage is a no-op: a bootstrap over videos.

`bootstrap_interval` returns the statistic on the full grid and the percentile interval of
its replicates; the RNG seed is fixed, so a notebook's interval is the same on every run.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["BOOTSTRAP_SAMPLES", "BOOTSTRAP_SEED", "per_video_grid", "bootstrap_replicates", "bootstrap_interval",
           "mean_contrast"]

BOOTSTRAP_SAMPLES = 2000  # replicates: the 2.5 % and 97.5 % percentiles rest on 50 replicates each
BOOTSTRAP_SEED = 0


def per_video_grid(values: dict) -> pd.DataFrame:
    """``{seed: Series indexed by video}`` → seeds × videos DataFrame (videos sorted); a
    video missing from any seed's run is an error, since the runs must share the TEST set."""
    values = {seed: pd.Series(series) for seed, series in values.items()}
    videos = sorted(set().union(*(series.index for series in values.values())))
    missing = sorted(video for video in videos if any(video not in series.index for series in values.values()))
    if missing:
        raise ValueError(f"the runs were tested on different videos (e.g. {missing[:3]}); compare runs of one data set")
    return pd.DataFrame({seed: series.reindex(videos) for seed, series in values.items()}).T  # NaN values stay NaN


def _aligned(arms: dict) -> dict[str, np.ndarray]:
    """The arms' grids restricted to the seeds and videos they all have, as arrays."""
    frames = {name: pd.DataFrame(grid) for name, grid in arms.items()}
    seeds = sorted(set.intersection(*(set(frame.index) for frame in frames.values())))
    videos = sorted(set.intersection(*(set(frame.columns) for frame in frames.values())))
    if not seeds or not videos:
        raise ValueError("the arms share no seed or no video: nothing to pair")
    return {name: frame.loc[seeds, videos].to_numpy(np.float64) for name, frame in frames.items()}


def bootstrap_replicates(arms: dict, statistic, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                         resample_seeds: bool = True) -> np.ndarray:
    """`statistic({arm: resampled (seeds, videos) array})` over `samples` two-stage resamples.

    `arms`: ``{name: seeds × videos}`` (DataFrames, or arrays of one shape); only the seeds and
    videos common to every arm are used. Per replicate one draw of seed rows (with replacement;
    skipped with ``resample_seeds=False``) and one draw of video columns (with replacement),
    shared by every arm."""
    grids = _aligned(arms)
    n_seeds, n_videos = next(iter(grids.values())).shape
    rng = np.random.default_rng(seed)
    replicates = np.empty(samples)
    for index in range(samples):
        rows = rng.integers(0, n_seeds, n_seeds) if resample_seeds else np.arange(n_seeds)
        columns = rng.integers(0, n_videos, n_videos)
        replicates[index] = statistic({name: grid[rows][:, columns] for name, grid in grids.items()})
    return replicates


def bootstrap_interval(arms: dict, statistic, *, level: float = 0.95, **options) -> dict:
    """``{"value", "low", "high", "seeds", "videos"}``: `statistic` on the full grids and the
    percentile interval of `bootstrap_replicates` (replicates where it is NaN are skipped)."""
    grids = _aligned(arms)
    replicates = bootstrap_replicates(arms, statistic, **options)
    replicates = replicates[np.isfinite(replicates)]
    tail = 100 * (1 - level) / 2
    low, high = (np.percentile(replicates, [tail, 100 - tail]) if len(replicates) else (np.nan, np.nan))
    n_seeds, n_videos = next(iter(grids.values())).shape
    return {"value": float(statistic(grids)), "low": float(low), "high": float(high), "seeds": n_seeds,
            "videos": n_videos}


def mean_contrast(coefficients: dict):
    """The statistic Σ_arm c_arm · mean(arm's grid): ``{"a": 1}`` is arm a's mean, ``{"a": 1,
    "b": -1}`` the paired difference a − b (NaNs skipped in each mean)."""
    def statistic(grids: dict) -> float:
        return float(sum(weight * np.nanmean(grids[name]) for name, weight in coefficients.items()))

    return statistic
