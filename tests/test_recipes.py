"""The two recipes: the paper's recipe is exactly the paper profile's training knobs, and the
diagnostics tables read what the runs recorded."""
import math

import pandas as pd
import pytest

from protoef.config import PAPER_RECIPE, resolve
from protoef.companion.studies import recipes_for
from protoef.companion.tables import gradient_shares


def test_paper_recipe_on_the_demo_has_the_paper_profiles_losses_and_rates():
    demo_with_paper_recipe, paper = resolve("demo", PAPER_RECIPE), resolve("paper")
    assert demo_with_paper_recipe.loss == paper.loss
    for name in ("lr_backbone", "lr_features", "lr_occurrence", "lr_prototypes", "lr_head", "weight_decay"):
        assert getattr(demo_with_paper_recipe.optim, name) == getattr(paper.optim, name), name
    assert demo_with_paper_recipe.model.labels_from_train is False
    # ...while data, backbone and budget stay the demo's.
    assert demo_with_paper_recipe.data == resolve("demo").data
    assert demo_with_paper_recipe.model.backbone == "r2plus1d_10"


def test_remedies_are_off_in_the_paper_profile_and_on_in_the_demo():
    paper, demo = resolve("paper"), resolve("demo")
    # The paper trains with MSE + cluster + PSD + occurrence only (docs/method.md §2, §7).
    assert paper.loss.separation == paper.loss.soft_label == paper.loss.reverse_soft_label == paper.loss.concentration == 0
    assert not paper.loss.psd_label_aware and not paper.loss.occurrence_share and not paper.model.labels_from_train
    assert demo.loss.separation > 0 and demo.loss.soft_label > 0 and demo.loss.reverse_soft_label > 0
    assert demo.loss.occurrence_share and demo.model.labels_from_train and demo.loss.concentration > 0
    assert paper.optim.beta_sharpening_max == 1 and demo.optim.beta_sharpening_max > 1  # 1: off


def test_each_profile_compares_its_own_recipe_with_the_other_one():
    # What the comparison must be, checked on the configs the recipes resolve to (not on the
    # override dicts): on the paper profile the second arm switches the remedies on; on the
    # demo it switches them off and restores the paper's loss weights and learning rates.
    paper_arms, demo_arms = recipes_for("paper"), recipes_for("demo")
    assert [extra for _, extra in paper_arms.values()].count({}) == 1
    remedied = resolve("paper", paper_arms["with the remedies"][1])
    assert remedied.loss.separation > 0 and remedied.loss.reverse_soft_label > 0 and remedied.loss.occurrence_share
    assert remedied.optim.beta_sharpening_max > 1
    assert remedied.model.backbone == resolve("paper").model.backbone and remedied.data == resolve("paper").data
    as_paper = resolve("demo", demo_arms["paper recipe"][1])
    assert as_paper.loss == resolve("paper").loss and as_paper.optim.lr_head == resolve("paper").optim.lr_head
    assert as_paper.optim.beta_sharpening_max == 1
    assert resolve("demo", demo_arms["this project"][1]) == resolve("demo")
    # The two arms write to different run names, so neither overwrites the other.
    assert len({prefix for prefix, _ in demo_arms.values()}) == len({prefix for prefix, _ in paper_arms.values()}) == 2


def test_gradient_shares_hand_computed():
    history = pd.DataFrame({"train_grad_mse_prototypes": [3.0, 1.0], "train_grad_pas_prototypes": [1.0, 1.0],
                            "train_grad_mse_features": [5.0, 5.0]})
    shares = gradient_shares(history)
    # Epoch 1: 3/4 and 1/4; epoch 2: 1/2 and 1/2 -> means 0.625 and 0.375. Features are left out.
    assert shares["mse"] == pytest.approx(0.625) and shares["pas"] == pytest.approx(0.375)
    assert set(shares.index) == {"mse", "pas"}
    assert math.isnan(gradient_shares(history.assign(train_grad_mse_prototypes=0.0, train_grad_pas_prototypes=0.0))["pas"])


def test_the_compared_black_box_trains_every_stage_in_every_profile():
    # ProtoEFNet's demo freezes stem and layer1; the black box of notebooks 03 and 07 must not
    # inherit that (frozen, it lost ~0.6 VAL MAE: docs/method.md §7).
    from protoef.companion.studies import BLACKBOX
    from protoef.training.build import build_model

    for profile in ("smoke", "demo", "paper"):
        config = resolve(profile, {**BLACKBOX, "model.weights": None, "model.backbone": "r2plus1d_10"})
        assert config.model.kind == "blackbox" and config.model.frozen_stages == 0, profile
        model = build_model(config)
        assert all(parameter.requires_grad for parameter in model.parameters()), profile
    assert resolve("demo").model.frozen_stages == 2  # while ProtoEFNet's stay frozen
