"""protoef.companion (studies, tables, figures): expected values are worked out by hand (angles of constructed vectors,
means and sample stds of hand-made metric rows), never by the code under test."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from protoef.companion import figures, studies, tables
from protoef.companion import notebook
from protoef.config import resolve
from protoef.diagnostics import far_near_angles, pairwise_angles


# --------------------------------------------------------------------------- budgets per profile

def test_study_budgets_belong_to_the_profile():
    # What each plan must do, not what it happens to hold: the paper profile runs every study
    # at the paper's own budget (no override of the profile's epochs, videos or data) and over
    # the paper's grid (τ × Δl: 20 cells; 4 PAS weights); every demo arm comparison where seed
    # noise dominates (02, 03, 04, 07) gets >= 5 distinct seeds (issue 17); a cheaper sweep
    # trains fewer epochs than the profile; smoke stays seconds long (1 seed, 1 epoch).
    paper, demo, smoke = (studies.plan_for(name) for name in ("paper", "demo", "smoke"))
    budget_keys = {"optim.epochs", "data.limit_videos", "data.synthetic_videos"}
    assert not budget_keys & {*paper.pas_overrides, *paper.sensitivity_overrides, *paper.occurrence_overrides}
    assert len(paper.taus) * len(paper.deltas) == 20 and len(paper.pas_weights) == 4
    for seeds in (demo.seeds, demo.pas_seeds, demo.occurrence_seeds):
        assert len(set(seeds)) == len(seeds) >= 5
    assert len(set(demo.recipe_seeds)) >= 3 and len(set(demo.occurrence_paper_seeds)) >= 3
    assert demo.sensitivity_overrides["optim.epochs"] < resolve("demo").optim.epochs
    for plan_seeds in (smoke.seeds, smoke.pas_seeds, smoke.occurrence_seeds, smoke.recipe_seeds):
        assert len(plan_seeds) == 1
    assert smoke.sensitivity_overrides["optim.epochs"] == smoke.occurrence_overrides["optim.epochs"] == 1
    with pytest.raises(KeyError, match="no study plan for profile 'laptop'"):
        studies.plan_for("laptop")


# --------------------------------------------------------------------------- angles

def test_pairwise_angles_of_hand_made_vectors():
    vectors = [[0.0, 3.0], [2.0, 0.0], [1.0, 1.0]]  # 90° apart, and the diagonal 45° from each
    expected = np.array([[0, 90, 45], [90, 0, 45], [45, 45, 0]], float)
    np.testing.assert_allclose(pairwise_angles(vectors), expected, atol=1e-6)
    np.testing.assert_allclose(pairwise_angles([[1.0, 0.0], [-5.0, 0.0]]), [[0, 180], [180, 0]], atol=1e-6)
    # 1e-7 rad apart: arccos of the dot product would round to 0, the atan2 form keeps it
    tiny = pairwise_angles([[1.0, 0.0], [math.cos(1e-7), math.sin(1e-7)]])[0, 1]
    assert tiny == pytest.approx(math.degrees(1e-7), rel=1e-6)


def test_far_near_angles_by_hand():
    # labels 10, 12, 30 with Δl = 5: near pair (10,12) at 90°, far pairs (10,30) 45° and (12,30) 45°
    vectors = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    far, near = far_near_angles(vectors, [10.0, 12.0, 30.0], 5.0)
    assert far == pytest.approx(45.0)
    assert near == pytest.approx(90.0)
    far, near = far_near_angles(vectors, [10.0, 11.0, 12.0], 5.0)
    assert math.isnan(far) and near == pytest.approx((90 + 45 + 45) / 3)


def test_angle_matrix_figure_shows_the_matrix_ordered_by_label():
    # labels out of order: sorted order is rows 1 (EF 20), 2 (EF 40), 0 (EF 60)
    vectors = np.array([[0.0, 3.0], [2.0, 0.0], [1.0, 1.0]])
    figure = figures.angle_matrix_figure({"PAS": (vectors, [60.0, 20.0, 40.0])}, delta=5.0)
    shown = np.asarray(figure.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, [[0, 45, 90], [45, 0, 45], [90, 45, 0]], atol=1e-6)
    assert [tick.get_text() for tick in figure.axes[0].get_xticklabels()] == ["20", "40", "60"]
    # all three pairs are > 5 apart: far mean (45 + 90 + 45) / 3 = 60°, no near pair
    assert "|Δl|>5: 60.0°" in figure.axes[0].get_title()


def test_label_gap_angle_figure_plots_every_pair():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    figure = figures.label_gap_angle_figure(vectors, [10.0, 12.0, 30.0], title="x")
    points = figure.axes[0].collections[0].get_offsets()
    assert sorted(map(tuple, np.round(points, 6))) == [(2.0, 90.0), (18.0, 45.0), (20.0, 45.0)]
    assert "over 3 pairs" in figure.axes[0].get_title()


# --------------------------------------------------------------------------- aggregation

def test_mean_std_of_hand_made_metric_rows():
    table = pd.DataFrame([
        {"arm": "PAS", "seed": 0, "mae": 4.0, "f1_40": 0.5},
        {"arm": "PAS", "seed": 1, "mae": 6.0, "f1_40": 0.7},
        {"arm": "PAS", "seed": 2, "mae": 8.0, "f1_40": float("nan")},
        {"arm": "no PAS", "seed": 0, "mae": 5.0, "f1_40": 0.4},
    ])
    summary = tables.mean_std(table, "arm", ["mae", "f1_40"])
    assert list(summary.index) == ["PAS", "no PAS"]  # first-seen order
    assert summary.loc["PAS", ("mae", "mean")] == pytest.approx(6.0)
    assert summary.loc["PAS", ("mae", "std")] == pytest.approx(2.0)  # sample std of 4, 6, 8
    assert summary.loc["PAS", ("f1_40", "mean")] == pytest.approx(0.6)  # NaN skipped
    assert summary.loc["PAS", ("f1_40", "std")] == pytest.approx(math.sqrt(0.02))
    assert summary.loc["PAS", ("n", "")] == 3
    assert math.isnan(summary.loc["no PAS", ("mae", "std")])
    text = tables.format_mean_std(summary, digits=1)
    assert text.loc["PAS", "mae"] == "6.0 ± 2.0"
    assert text.loc["no PAS", "mae"] == "5.0"
    assert text.loc["PAS", "n"] == 3


def test_pick_by_quantile():
    efs = [55.0, 20.0, 70.0, 40.0, 62.0]
    picks = tables.pick_by_quantile(efs, {"low": 0.0, "mid": 0.5, "high": 1.0})
    assert picks == {"low": 1, "mid": 0, "high": 2}
    assert tables.pick_by_quantile(efs, {"q": 0.25}) == {"q": 3}


# --------------------------------------------------------------------------- localisation tables

def iou_rows():
    rows = []
    for method, values in (("occurrence", [(0, "ED", 0.2), (0, "ES", 0.4), (1, "ED", 0.6), (1, "ES", 0.8)]),
                           ("gradcam", [(0, "ED", 0.1), (0, "ES", 0.3)])):
        rows += [{"method": method, "filename": "a.avi", "prototype": p, "frame": f, "iou": v, "lv_fraction": 0.2}
                 for p, f, v in values]
    return pd.DataFrame(rows)


def test_iou_summary_and_chance():
    summary = tables.iou_summary(iou_rows())
    assert summary.loc[("occurrence", "ED"), "mean"] == pytest.approx(0.4)
    assert summary.loc[("occurrence", "ES"), "count"] == 2
    assert summary.loc[("gradcam", "ES"), "mean"] == pytest.approx(0.3)
    # a random 20 % of the pixels against a 20 % mask: intersection .04, union .36
    assert summary.loc[("gradcam", "ED"), "chance"] == pytest.approx(0.04 / 0.36)


def test_iou_per_prototype_sorted_by_label():
    table = tables.iou_per_prototype(iou_rows(), labels=[70.0, 30.0])
    assert list(table.index) == [1, 0]
    assert table.loc[0, "ED"] == pytest.approx(0.2) and table.loc[0, "ES"] == pytest.approx(0.4)
    assert table.loc[1, "all"] == pytest.approx(0.7)
    assert table.loc[1, "ef_label"] == 30.0


# --------------------------------------------------------------------------- sweeps

def test_sweep_heatmaps_annotate_the_grid_and_leave_missing_cells_empty():
    table = pd.DataFrame({"tau": [0.1, 0.1, 0.5, 0.1], "delta": [2.5, 5.0, 5.0, 2.5], "mae": [4.0, 5.0, 6.0, 5.0],
                          "f1_40": [0.5, 0.4, 0.3, 0.5], "sparsity": [3.0, 4.0, 5.0, 3.0], "diversity": [8, 9, 10, 8]})
    figure = figures.sweep_heatmaps(table)
    mae = figure.axes[0]
    assert mae.get_title() == "mae"
    # cells (τ 0.1, Δl 2.5) = mean of 4 and 5; (0.1, 5) = 5; (0.5, 5) = 6; (0.5, 2.5) has no run: no label
    assert sorted(text.get_text() for text in mae.texts) == ["4.50", "5.00", "6.00"]
    assert [t.get_text() for t in mae.get_yticklabels()] == ["0.1", "0.5"]


def test_ensure_run_refuses_a_run_with_other_settings(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "smoke-pas-seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    # The stored config as fit writes it: the resolved config with the computed mean/std.
    stored = notebook.config_for("smoke", {"seed": 0, "optim.epochs": 12}).to_dict()
    stored["data"].update(mean=0.1, std=0.2)
    (run / "config.json").write_text(json.dumps(stored))
    for name in ("history.csv", "predictions.csv"):
        (run / name).write_text("a\n1\n")
    monkeypatch.setattr(notebook, "REPO", tmp_path)
    assert notebook.ensure_run("smoke", "pas-seed0", {"seed": 0, "optim.epochs": 12}) == run
    with pytest.raises(ValueError, match=r"another config: optim.epochs \(run: 12, requested: 1\)\. "):
        notebook.ensure_run("smoke", "pas-seed0", {"seed": 0, "optim.epochs": 1})
