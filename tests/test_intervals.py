"""protoef.companion.intervals (two-stage bootstrap over seeds and TEST videos) and the
per-video tables and claims built on it, against resample spaces enumerated by hand."""
import math

import numpy as np
import pandas as pd
import pytest

from protoef.companion import claims, intervals, tables


def grid(rows, videos=None):
    rows = np.asarray(rows, float)
    return pd.DataFrame(rows, columns=videos or [f"v{i}" for i in range(rows.shape[1])])


def test_identical_values_give_a_degenerate_interval():
    result = intervals.bootstrap_interval({"a": grid([[0.4, 0.4, 0.4]] * 3)}, intervals.mean_contrast({"a": 1}))
    assert (result["value"], result["low"], result["high"]) == pytest.approx((0.4, 0.4, 0.4))
    assert (result["seeds"], result["videos"]) == (3, 3)


def test_two_seeds_one_video_enumerated():
    # Seed draws (0,0), (0,1), (1,0), (1,1), each 1/4: means 0, 0.5, 0.5, 1. The 2.5 % and
    # 97.5 % percentiles fall inside the 1/4 masses at 0 and at 1.
    replicates = intervals.bootstrap_replicates({"a": grid([[0.0], [1.0]])}, intervals.mean_contrast({"a": 1}))
    assert set(np.round(replicates, 12)) == {0.0, 0.5, 1.0}
    assert np.mean(replicates == 0.5) == pytest.approx(0.5, abs=0.04)
    result = intervals.bootstrap_interval({"a": grid([[0.0], [1.0]])}, intervals.mean_contrast({"a": 1}))
    assert (result["value"], result["low"], result["high"]) == (0.5, 0.0, 1.0)


def test_seeds_and_videos_are_crossed_each_drawn_once():
    # Only cell (seed 0, video 0) is 1. A replicate's mean is k_s·k_v / 4 with k_s, k_v the
    # counts of seed 0 and video 0 in the draws (each 2, 1, 0 with probability 1/4, 1/2, 1/4):
    # P(mean = 1) = 1/16, P(0.5) = 1/4, P(0.25) = 1/4, P(0) = 7/16, expectation 1/4.
    replicates = intervals.bootstrap_replicates({"a": grid([[1.0, 0.0], [0.0, 0.0]])},
                                                intervals.mean_contrast({"a": 1}), samples=8000)
    for value, probability in ((1.0, 1 / 16), (0.5, 1 / 4), (0.25, 1 / 4), (0.0, 7 / 16)):
        assert np.mean(np.isclose(replicates, value)) == pytest.approx(probability, abs=0.02)
    assert replicates.mean() == pytest.approx(0.25, abs=0.01)


def test_without_the_seed_stage_one_seed_row_is_kept():
    # Two videos 0 and 1, seeds fixed: replicate means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    replicates = intervals.bootstrap_replicates({"a": grid([[0.0, 1.0], [0.0, 1.0]])},
                                                intervals.mean_contrast({"a": 1}), resample_seeds=False, samples=4000)
    assert np.mean(np.isclose(replicates, 0.5)) == pytest.approx(0.5, abs=0.03)


def test_arms_share_the_resampled_seeds_and_videos():
    # b = a + 0.3 everywhere: paired, every replicate's difference is exactly 0.3.
    a = grid([[0.1, 0.9, 0.5], [0.2, 0.7, 0.0]])
    result = intervals.bootstrap_interval({"a": a, "b": a + 0.3}, intervals.mean_contrast({"b": 1, "a": -1}))
    assert (result["value"], result["low"], result["high"]) == pytest.approx((0.3, 0.3, 0.3))


def test_a_share_keeps_its_interval_inside_zero_one():
    hits = grid([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]])
    result = intervals.bootstrap_interval({"a": hits}, intervals.mean_contrast({"a": 1}))
    assert result["value"] == pytest.approx(0.9) and 0.0 <= result["low"] <= result["high"] == 1.0


def test_only_common_seeds_and_videos_are_paired():
    a = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=[0, 1], columns=["x", "y"])
    b = pd.DataFrame([[0.0]], index=[1], columns=["y"])
    result = intervals.bootstrap_interval({"a": a, "b": b}, intervals.mean_contrast({"a": 1, "b": -1}))
    assert (result["value"], result["seeds"], result["videos"]) == (4.0, 1, 1)


def test_per_video_grid_refuses_runs_on_other_videos():
    table = intervals.per_video_grid({1: pd.Series({"b": 2.0, "a": 1.0}), 0: pd.Series({"a": 3.0, "b": math.nan})})
    assert list(table.columns) == ["a", "b"] and table.loc[0, "a"] == 3.0 and math.isnan(table.loc[0, "b"])
    with pytest.raises(ValueError, match="different videos"):
        intervals.per_video_grid({0: pd.Series({"a": 1.0}), 1: pd.Series({"b": 1.0})})


# --------------------------------------------------------------------------- per-video values of a run
def write_run(folder, ef, prediction, top1_label, weights=None, labels=None):
    folder.mkdir(parents=True)
    names = [f"v{i}.avi" for i in range(len(ef))]
    pd.DataFrame({"filename": names, "ef": ef, "prediction": prediction, "top1_label": top1_label}).to_csv(
        folder / "predictions.csv", index=False)
    if weights is not None:
        np.savez(folder / "test_attention.npz", filename=np.array(names), ef=np.asarray(ef, float),
                 weights=np.asarray(weights, float), prototype_labels=np.asarray(labels, float))
    return folder


def test_per_video_values_of_a_run(tmp_path):
    run = write_run(tmp_path / "r", ef=[50.0, 30.0, 60.0], prediction=[52.0, 20.0, 60.5], top1_label=[60.0, 45.0, 49.0],
                    weights=[[0.5, 0.5, 0.0], [0.1, 0.2, 0.7], [0.0, 0.0, 1.0]], labels=[40.0, 55.0, 70.0])
    assert list(tables.absolute_errors(run)) == pytest.approx([2.0, 10.0, 0.5])
    assert list(tables.top1_hits(run)) == [1.0, 0.0, 0.0]  # |60 − 50| = 10 counts (inclusive); 15 and 11 do not
    # within ±10 of 50: labels 40 and 55; of 30: 40; of 60: 55 and 70
    assert list(tables.beta_mass_near_truth(run)) == pytest.approx([1.0, 0.1, 1.0])


def test_iou_above_chance_per_video():
    iou = pd.DataFrame({"filename": ["a", "a", "b"], "iou": [0.5, 0.3, 0.2], "lv_fraction": [0.2, 0.5, 0.1]})
    above = tables.iou_above_chance(iou)
    assert above["a"] == pytest.approx(np.mean([0.5 - 0.2 / 1.8, 0.3 - 0.5 / 1.5]))
    assert above["b"] == pytest.approx(0.2 - 0.1 / 1.9)


def test_localization_summary_averages_ratios_over_seeds():
    rows = pd.DataFrame({"arm": "x", "method": "occurrence", "frame": "ED", "seed": [0, 0, 1],
                         "iou": [0.4, 0.2, 0.5], "lv_fraction": [0.2, 0.2, 0.5],
                         "lv_mass_share": [0.6, 0.2, 0.5], "pointing_hit": [1.0, 0.0, 1.0]})
    row = tables.localization_summary(rows).loc[("x", "occurrence", "ED")]
    chance0, chance1 = 0.2 / 1.8, 0.5 / 1.5
    assert row["iou_over_chance"] == pytest.approx((0.3 / chance0 + 0.5 / chance1) / 2)
    assert row["mass_over_fraction"] == pytest.approx((0.4 / 0.2 + 0.5 / 0.5) / 2)
    assert row["pointing_over_fraction"] == pytest.approx((0.5 / 0.2 + 1.0 / 0.5) / 2) and row["seeds"] == 2


# --------------------------------------------------------------------------- claims on per-video values
def test_explanation_claims_bootstrap_the_share(tmp_path):
    runs = [write_run(tmp_path / f"s{seed}", ef=[50.0, 50.0], prediction=[50.0, 50.0], top1_label=labels)
            for seed, labels in enumerate(([55.0, 55.0], [55.0, 70.0]))]
    (claim,) = claims.explanation_claims(pd.DataFrame({"seed": [0, 1], "run": runs}))
    assert claim.value == pytest.approx(0.75)  # hits (1, 1) and (1, 0)
    assert (claim.low, claim.high) == (0.0, 1.0)  # all-miss replicates (seeds 1, 1 and videos 1, 1): 1/16 > 2.5 %
    assert claim.verdict == "inconclusive" and "2 seeds × 2 videos" in claim.measure


def test_sensitivity_claims_resample_the_same_videos_for_every_grid_point(tmp_path):
    # Grid point B errs by exactly 0.5 more on every video: the range is 0.5 in every replicate.
    runs = [write_run(tmp_path / name, ef=[50.0, 40.0, 30.0], prediction=[50.0 + e, 40.0 - e2, 30.0 + e3],
                      top1_label=[0.0] * 3) for name, (e, e2, e3) in (("a", (1.0, 2.0, 0.0)), ("b", (1.5, 2.5, 0.5)))]
    (claim,) = claims.sensitivity_claims(pd.DataFrame({"tau": [0.1, 0.5], "delta": [5, 5], "run": runs}))
    assert (claim.value, claim.low, claim.high) == pytest.approx((0.5, 0.5, 0.5))
    assert claim.verdict == "holds" and "3 TEST videos" in claim.measure
