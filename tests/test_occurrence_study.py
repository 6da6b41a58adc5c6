"""Notebook 07's machinery (protoef.companion.occurrence_study, studies.occurrence_weight_runs,
localization.matching_gradcam_layer) against values worked out by hand."""
import math

import numpy as np

import pandas as pd
import pytest
import torch
from scipy import stats

from protoef.analysis.localization import matching_gradcam_layer
from protoef.companion import notebook, occurrence_study, studies
from protoef.model import BlackBoxRegressor


def test_the_matching_gradcam_layer_has_the_maps_size():
    # 32-pixel frames: the stem halves them (16), layer2, layer3 and layer4 halve again (8, 4, 2).
    blackbox, clip = BlackBoxRegressor(backbone="r2plus1d_10"), torch.randn(1, 3, 8, 32, 32)
    assert matching_gradcam_layer(blackbox, (4, 4), clip) == "layer3"  # output stride 8
    assert matching_gradcam_layer(blackbox, (8, 8), clip) == "layer2"  # output stride 4
    assert matching_gradcam_layer(blackbox, (2, 2), clip) == "layer4"
    with pytest.raises(ValueError, match=r"no black-box block has \(3, 3\) maps"):
        matching_gradcam_layer(blackbox, (3, 3), clip)


def test_occurrence_weights_are_zero_the_papers_and_the_profiles_own():
    own = notebook.config_for("demo").loss.occurrence
    assert studies.PAPER_OCCURRENCE_WEIGHT == 1e-4
    assert studies.occurrence_weights_for("demo") == ((0.0, 1e-4) if own == 1e-4 else (0.0, 1e-4, own))


def test_occurrence_weight_runs_reuse_notebook_02s_runs_for_the_profiles_weight(monkeypatch):
    planned = {}
    monkeypatch.setattr(studies, "run_sweep", lambda profile, plan, **_: planned.update(plan) or plan)
    own = notebook.config_for("demo").loss.occurrence
    studies.occurrence_weight_runs("demo", (0.0, own), (0, 1), {})
    assert planned[(own, 1)] == ("protoefnet-seed1", {"loss.occurrence": own, "seed": 1})
    assert planned[(0.0, 0)] == ("occ0-seed0", {"loss.occurrence": 0.0, "seed": 0})
    planned.clear()
    studies.occurrence_weight_runs("demo", (own,), (0,), {"optim.epochs": 1})  # other budget: its own runs
    assert planned[(own, 0)][0] == f"occ{own:g}-seed0"
    if own != studies.PAPER_OCCURRENCE_WEIGHT:  # the paper's weight, in the paper's form, over its own seeds
        planned.clear()
        studies.occurrence_weight_runs("demo", (0.0, studies.PAPER_OCCURRENCE_WEIGHT, own), (0, 1, 2), {},
                                       paper_seeds=(0, 1))
        assert sorted(planned) == sorted([(0.0, 0), (0.0, 1), (0.0, 2), (own, 0), (own, 1), (own, 2), (1e-4, 0),
                                          (1e-4, 1)])
        assert planned[(1e-4, 1)] == ("occ0.0001-seed1", {"loss.occurrence": 1e-4, "loss.occurrence_share": False,
                                                          "seed": 1})


def iou_rows(arm, method, seed, ious):
    return pd.DataFrame({"arm": arm, "method": method, "seed": seed, "filename": ["a", "a", "b", "b"],
                         "iou": ious, "lv_fraction": [0.2, 0.5, 0.2, 0.5]})


def one_seed_tables():
    """Weight 1 against weight 0 and the black box, one seed, equal IoU everywhere: the tables
    a deletion-claim test needs besides its deletion rows (arm name, iou, runs, randomization)."""
    mine = occurrence_study.arm_name(1.0)
    iou = pd.concat([iou_rows(arm, method, 0, [0.3, 0.3, 0.3, 0.3]) for arm, method in
                     [(mine, "occurrence"), (occurrence_study.arm_name(0.0), "occurrence"),
                      (occurrence_study.BLACKBOX_ARM, "gradcam layer3")]])
    runs = pd.DataFrame({"occurrence_weight": [1.0, 0.0], "seed": [0, 0], "mae": [4.0, 4.0]})
    randomization = pd.DataFrame({"step": [2], "maps": "occurrence", "filename": ["a"], "randomized": ["x"],
                                  "spearman": [0.1]})
    return mine, iou, runs, randomization


def test_occurrence_claims_on_hand_made_tables():
    base = {0: [0.30, 0.40, 0.20, 0.50], 1: [0.10, 0.60, 0.35, 0.45]}
    mine, zero, cam = (occurrence_study.arm_name(1e-3), occurrence_study.arm_name(0.0), occurrence_study.BLACKBOX_ARM)
    iou = pd.concat([iou_rows(zero, "occurrence", s, v) for s, v in base.items()]
                    + [iou_rows(mine, "occurrence", s, [x + 0.05 for x in v]) for s, v in base.items()]
                    + [iou_rows(cam, "gradcam layer3", s, [x + 0.04 for x in v]) for s, v in base.items()])
    runs = pd.DataFrame({"occurrence_weight": [1e-3, 1e-3, 0.0, 0.0], "seed": [0, 1, 0, 1], "mae": [4.0, 4.2, 4.0, 4.0]})
    # The claim reads the rows at the LV's share (0.125) only, and of each clip the top-3
    # prototypes by β: the quarter's rows and clip a's fourth prototype (β 0.01), where hiding
    # the top cells is no better than random, must not enter it.
    deletion = pd.DataFrame({"arm": mine, "seed": 0, "fraction": 0.125, "cells": 8, "clip": [0, 0, 0, 0, 1],
                             "filename": ["a", "a", "a", "a", "b"], "prototype": [0, 1, 2, 3, 0],
                             "beta": [0.5, 0.01, 0.3, 0.2, 0.9], "drop_top": [0.5, 0.0, 0.7, 0.6, 0.3],
                             "drop_random": [0.1, 1.0, 0.1, 0.1, 0.05]})
    deletion = pd.concat([deletion, deletion.assign(fraction=0.25, cells=16, drop_random=1.0)], ignore_index=True)
    randomization = pd.DataFrame({"step": [0, 0, 2, 2], "maps": "occurrence", "filename": ["a", "b", "a", "b"],
                                  "randomized": ["x", "x", "x,y,z", "x,y,z"], "spearman": [0.9, 0.9, 0.2, 0.2]})
    gain, lead, cost, faithful, sane = occurrence_study.occurrence_claims(iou, runs, deletion, randomization, chosen=1e-3,
                                                                       layer="layer3", deletion_fraction=0.125)
    # +0.05 IoU on every row (the chance level is shared): 0.05 in every paired replicate.
    assert (gain.value, gain.low, gain.high) == pytest.approx((0.05, 0.05, 0.05)) and gain.verdict == "holds"
    assert (lead.value, lead.low, lead.high) == pytest.approx((0.01, 0.01, 0.01)) and lead.verdict == "does not hold"
    half = stats.t.ppf(0.975, 1) * math.sqrt(0.02) / math.sqrt(2)  # differences 0 and 0.2: sd √0.02
    assert (cost.value, cost.low, cost.high) == pytest.approx((0.1, 0.1 - half, 0.1 + half))
    assert cost.verdict == "inconclusive"
    # per clip: a (prototypes 0, 2, 3) drops 0.6 vs 0.1, b 0.3 vs 0.05, so top − 3 × random is 0.3
    # and 0.15: mean 0.225, and every bootstrap replicate lies between the two clips' values;
    # ratio of means 0.45 / 0.075 = 6
    assert faithful.value == pytest.approx(0.225) and 0.15 - 1e-12 <= faithful.low <= faithful.high <= 0.3 + 1e-12
    assert faithful.verdict == "holds" and "ratio of the means 6.00" in faithful.measure
    assert "top 8 cells" in faithful.claim and "12%" in faithful.claim and "top-3 β" in faithful.claim
    assert (sane.value, sane.low, sane.high) == pytest.approx((0.2, 0.2, 0.2)) and sane.verdict == "holds"  # step 2 only


def test_deletion_claim_stays_defined_when_random_occlusion_raises_the_similarity():
    # Random cells that *raise* s_k (negative drop) made the old ratio of means negative (here
    # 0.4 / −0.1 = −4, "does not hold") although hiding the top cells is what lowers s_k.
    # top − 3 × random: clip a 0.5 + 0.3 = 0.8, clip b 0.3 + 0.3 = 0.6, mean 0.7 > 0: holds.
    # And a map no better than random (top = random = 0.2): 0.2 − 0.6 = −0.4 < 0: does not hold.
    mine, iou, runs, randomization = one_seed_tables()
    for deletion, expected, verdict in [
            (pd.DataFrame({"arm": mine, "seed": 0, "fraction": 0.1, "cells": 6, "clip": [0, 1], "prototype": 0, "beta": 1.0,
                           "filename": ["a", "b"], "drop_top": [0.5, 0.3], "drop_random": [-0.1, -0.1]}), 0.7, "holds"),
            (pd.DataFrame({"arm": mine, "seed": 0, "fraction": 0.1, "cells": 6, "clip": [0, 1], "prototype": 0, "beta": 1.0,
                           "filename": ["a", "b"], "drop_top": [0.2, 0.2], "drop_random": [0.2, 0.2]}), -0.4,
             "does not hold")]:
        claims = occurrence_study.occurrence_claims(iou, runs, deletion, randomization, chosen=1.0, layer="layer3",
                                                    deletion_fraction=0.1)
        faithful = next(claim for claim in claims if "faithful" in claim.claim)
        assert faithful.value == pytest.approx(expected) and faithful.verdict == verdict


def test_deletion_claim_pools_seeds_and_ranks_the_shown_maps_within_each_seed():
    # Two seeds of one arm, clip index 0 in both: the top-3 β rows are chosen per seed (pooled,
    # seed 1's high-β rows would push seed 0's out). Per (seed, clip) top − 3 × random:
    # seed 0 clip a: prototypes 1, 2, 3 (β 0.4, 0.3, 0.2; prototype 0 has β 0.1), drops 0.4 vs 0.1
    #   → 0.4 − 0.3 = 0.1; clip b: 0.6 vs 0.1 → 0.3;
    # seed 1 clip a: 0.9 vs 0.1 → 0.6; clip b: 0.6 vs 0.2 → 0.0.  Mean 0.25; ratio of the means
    # (0.4 + 0.6 + 0.9 + 0.6) / (0.1 + 0.1 + 0.1 + 0.2) = 5.
    mine = occurrence_study.arm_name(1.0)
    iou = pd.concat([iou_rows(arm, method, s, [0.3, 0.3, 0.3, 0.3]) for s in (0, 1) for arm, method in
                     [(mine, "occurrence"), (occurrence_study.arm_name(0.0), "occurrence"),
                      (occurrence_study.BLACKBOX_ARM, "gradcam layer3")]])
    runs = pd.DataFrame({"occurrence_weight": [1.0, 1.0, 0.0, 0.0], "seed": [0, 1, 0, 1], "mae": 4.0})
    randomization = pd.DataFrame({"step": [2], "maps": "occurrence", "filename": ["a"], "randomized": ["x"],
                                  "spearman": [0.1]})
    seed0 = pd.DataFrame({"seed": 0, "clip": [0, 0, 0, 0, 1], "filename": ["a", "a", "a", "a", "b"],
                          "prototype": [0, 1, 2, 3, 0], "beta": [0.1, 0.4, 0.3, 0.2, 0.9],
                          "drop_top": [9.0, 0.4, 0.4, 0.4, 0.6], "drop_random": [0.0, 0.1, 0.1, 0.1, 0.1]})
    seed1 = pd.DataFrame({"seed": 1, "clip": [0, 1], "filename": ["a", "b"], "prototype": [5, 5], "beta": [0.95, 0.95],
                          "drop_top": [0.9, 0.6], "drop_random": [0.1, 0.2]})
    deletion = pd.concat([seed0, seed1], ignore_index=True).assign(arm=mine, fraction=0.1, cells=6)
    claims = occurrence_study.occurrence_claims(iou, runs, deletion, randomization, chosen=1.0, layer="layer3",
                                                deletion_fraction=0.1)
    faithful = next(claim for claim in claims if "faithful" in claim.claim)
    assert faithful.value == pytest.approx(0.25) and "ratio of the means 5.00" in faithful.measure
    assert "2 seed(s) × 2 TEST clips" in faithful.measure
    assert 0.0 - 1e-12 <= faithful.low <= faithful.high <= 0.6 + 1e-12  # within the cells' extremes


def test_lv_area_fraction_is_the_mean_traced_area_on_val(recorded_smoke_run):
    # The deletion test's size comes from VAL's tracings (ED and ES of each video), never from
    # TEST, on which its claims are decided. The masks themselves are checked against
    # hand-rasterised polygons in tests/test_tracings.py.
    from protoef.training import build

    run = recorded_smoke_run[0]
    _, config, _ = build.load_run(run)
    expected = {}
    for split in ("VAL", "TEST"):
        data = build.evaluation_dataset(config, split, with_masks=True)
        expected[split] = [np.mean([data.masks(i)["ed_mask"].mean(), data.masks(i)["es_mask"].mean()]) for i in range(len(data))]
    assert occurrence_study.lv_area_fraction(run) == pytest.approx(np.mean(expected["VAL"]))
    assert occurrence_study.lv_area_fraction(run, videos=2) == pytest.approx(np.mean(expected["VAL"][:2]))
    assert occurrence_study.lv_area_fraction(run) != pytest.approx(np.mean(expected["TEST"]))
    assert 0.02 < occurrence_study.lv_area_fraction(run) < 0.5


def test_deletion_claims_one_per_fill_and_arm():
    # The gray and the inpainted rows of one arm are decided apart: gray per clip 0.6 − 3 × 0.1
    # = 0.3 (holds), inpainted 0.2 − 3 × 0.1 = −0.1 (does not hold), the fill named in each claim.
    mine, iou, runs, randomization = one_seed_tables()
    gray = pd.DataFrame({"arm": mine, "seed": 0, "fraction": 0.1, "cells": 6, "clip": [0, 1], "prototype": 0, "beta": 1.0,
                         "filename": ["a", "b"], "drop_top": [0.6, 0.6], "drop_random": [0.1, 0.1], "fill": "gray"})
    deletion = pd.concat([gray, gray.assign(fill="inpainted", drop_top=0.2)], ignore_index=True)
    claims = occurrence_study.occurrence_claims(iou, runs, deletion, randomization, chosen=1.0, layer="layer3",
                                                deletion_fraction=0.1)
    faithful = [claim for claim in claims if "faithful" in claim.claim]
    assert len(faithful) == 2
    assert "pixels gray" in faithful[0].claim and faithful[0].value == pytest.approx(0.3) and faithful[0].verdict == "holds"
    assert "pixels inpainted" in faithful[1].claim and faithful[1].value == pytest.approx(-0.1)
    assert faithful[1].verdict == "does not hold"
