"""protoef.studies: expected values are worked out by hand (angles of constructed vectors,
means and sample stds of hand-made metric rows), never by the code under test."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from protoef import studies


# --------------------------------------------------------------------------- smoke shrinking

def test_shrink_for_smoke_replaces_grid_and_overrides_only_in_smoke():
    limits = {"seeds": [0], "optim.epochs": 1}
    overrides = {"optim.epochs": 12, "model.tau": 0.5}
    assert studies.shrink_for_smoke("smoke", limits, overrides, seeds=[0, 1, 2]) == (
        {"optim.epochs": 1, "model.tau": 0.5}, [0])
    assert studies.shrink_for_smoke("demo", limits, overrides, seeds=[0, 1, 2]) == (overrides, [0, 1, 2])
    # grid names missing from the limits keep their values; order of the grid is kept
    assert studies.shrink_for_smoke("smoke", {"deltas": [5.0]}, {}, taus=[0.1, 0.2], deltas=[1, 2]) == (
        {}, [0.1, 0.2], [5.0])
    assert overrides == {"optim.epochs": 12, "model.tau": 0.5}  # the caller's dict is not modified


# --------------------------------------------------------------------------- angles

def test_angle_matrix_of_hand_made_vectors_is_ordered_by_label():
    # labels out of order: sorted order is rows 1 (EF 20), 2 (EF 40), 0 (EF 60)
    vectors = [[0.0, 3.0], [2.0, 0.0], [1.0, 1.0]]
    angles, labels = studies.angle_matrix(vectors, [60.0, 20.0, 40.0])
    assert labels.tolist() == [20.0, 40.0, 60.0]
    expected = np.array([[0, 45, 90], [45, 0, 45], [90, 45, 0]], float)
    np.testing.assert_allclose(angles, expected, atol=1e-6)


def test_angle_matrix_opposite_vectors_and_ties_keep_position():
    angles, labels = studies.angle_matrix([[1.0, 0.0], [-5.0, 0.0]], [30.0, 30.0])
    np.testing.assert_allclose(angles, [[0, 180], [180, 0]], atol=1e-6)
    assert labels.tolist() == [30.0, 30.0]


def test_far_near_angles_by_hand():
    # labels 10, 12, 30 with Δl = 5: near pair (10,12) at 90°, far pairs (10,30) 45° and (12,30) 45°
    vectors = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    far, near = studies.far_near_angles(vectors, [10.0, 12.0, 30.0], 5.0)
    assert far == pytest.approx(45.0)
    assert near == pytest.approx(90.0)
    far, near = studies.far_near_angles(vectors, [10.0, 11.0, 12.0], 5.0)
    assert math.isnan(far) and near == pytest.approx((90 + 45 + 45) / 3)


def test_angle_figures_build():
    rng = np.random.default_rng(0)
    arms = {"PAS": (rng.normal(size=(6, 4)), np.linspace(10, 90, 6)),
            "no PAS": (rng.normal(size=(6, 4)), np.linspace(10, 90, 6))}
    assert isinstance(studies.angle_matrix_figure(arms, delta=5.0), Figure)
    assert isinstance(studies.label_gap_angle_figure(*arms["PAS"], title="x"), Figure)


# --------------------------------------------------------------------------- aggregation

def test_mean_std_of_hand_made_metric_rows():
    table = pd.DataFrame([
        {"arm": "PAS", "seed": 0, "mae": 4.0, "f1_40": 0.5},
        {"arm": "PAS", "seed": 1, "mae": 6.0, "f1_40": 0.7},
        {"arm": "PAS", "seed": 2, "mae": 8.0, "f1_40": float("nan")},
        {"arm": "no PAS", "seed": 0, "mae": 5.0, "f1_40": 0.4},
    ])
    summary = studies.mean_std(table, "arm", ["mae", "f1_40"])
    assert list(summary.index) == ["PAS", "no PAS"]  # first-seen order
    assert summary.loc["PAS", ("mae", "mean")] == pytest.approx(6.0)
    assert summary.loc["PAS", ("mae", "std")] == pytest.approx(2.0)  # sample std of 4, 6, 8
    assert summary.loc["PAS", ("f1_40", "mean")] == pytest.approx(0.6)  # NaN skipped
    assert summary.loc["PAS", ("f1_40", "std")] == pytest.approx(math.sqrt(0.02))
    assert summary.loc["PAS", ("n", "")] == 3
    assert math.isnan(summary.loc["no PAS", ("mae", "std")])
    text = studies.format_mean_std(summary, digits=1)
    assert text.loc["PAS", "mae"] == "6.0 ± 2.0"
    assert text.loc["no PAS", "mae"] == "5.0"
    assert text.loc["PAS", "n"] == 3


def test_pick_by_quantile():
    efs = [55.0, 20.0, 70.0, 40.0, 62.0]
    picks = studies.pick_by_quantile(efs, {"low": 0.0, "mid": 0.5, "high": 1.0})
    assert picks == {"low": 1, "mid": 0, "high": 2}
    assert studies.pick_by_quantile(efs, {"q": 0.25}) == {"q": 3}


# --------------------------------------------------------------------------- localisation tables

def iou_rows():
    rows = []
    for method, values in (("occurrence", [(0, "ED", 0.2), (0, "ES", 0.4), (1, "ED", 0.6), (1, "ES", 0.8)]),
                           ("gradcam", [(0, "ED", 0.1), (0, "ES", 0.3)])):
        rows += [{"method": method, "filename": "a.avi", "prototype": p, "frame": f, "iou": v, "lv_fraction": 0.2}
                 for p, f, v in values]
    return pd.DataFrame(rows)


def test_iou_summary_and_chance():
    summary = studies.iou_summary(iou_rows())
    assert summary.loc[("occurrence", "ED"), "mean"] == pytest.approx(0.4)
    assert summary.loc[("occurrence", "ES"), "count"] == 2
    assert summary.loc[("gradcam", "ES"), "mean"] == pytest.approx(0.3)
    # a random 20 % of the pixels against a 20 % mask: intersection .04, union .36
    assert summary.loc[("gradcam", "ED"), "chance"] == pytest.approx(0.04 / 0.36)


def test_iou_per_prototype_sorted_by_label():
    table = studies.iou_per_prototype(iou_rows(), labels=[70.0, 30.0])
    assert list(table.index) == [1, 0]
    assert table.loc[0, "ED"] == pytest.approx(0.2) and table.loc[0, "ES"] == pytest.approx(0.4)
    assert table.loc[1, "all"] == pytest.approx(0.7)
    assert table.loc[1, "ef_label"] == 30.0


# --------------------------------------------------------------------------- sweeps

def test_sweep_heatmaps_builds_with_missing_cells():
    table = pd.DataFrame({"tau": [0.1, 0.1, 0.5], "delta": [2.5, 5.0, 5.0], "mae": [4.0, 5.0, 6.0],
                          "f1_40": [0.5, 0.4, 0.3], "sparsity": [3.0, 4.0, 5.0], "diversity": [8, 9, 10]})
    assert isinstance(studies.sweep_heatmaps(table), Figure)


def test_ensure_matching_run_refuses_a_run_with_other_settings(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "smoke-pas-seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    # The stored config as fit writes it: the resolved config with the computed mean/std.
    stored = studies.companion.config_for("smoke", {"seed": 0, "optim.epochs": 12}).to_dict()
    stored["data"].update(mean=0.1, std=0.2)
    (run / "config.json").write_text(json.dumps(stored))
    for name in ("history.csv", "predictions.csv"):
        (run / name).write_text("a\n1\n")
    monkeypatch.setattr(studies.companion, "REPO", tmp_path)
    assert studies.ensure_matching_run("smoke", "pas-seed0", {"seed": 0, "optim.epochs": 12}) == run
    with pytest.raises(ValueError, match=r"another config: optim.epochs \(run: 12, requested: 1\)\. "):
        studies.ensure_matching_run("smoke", "pas-seed0", {"seed": 0, "optim.epochs": 1})
