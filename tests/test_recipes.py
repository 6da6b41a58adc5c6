"""The two recipes: the paper's recipe is exactly the paper profile's training knobs, and the
diagnostics tables read what the runs recorded."""
import math

import pandas as pd
import pytest

from protoef.config import DEMO_RECIPE, PAPER_RECIPE, REMEDIES, get_key, resolve
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
    assert paper.loss.separation == paper.loss.soft_label == 0 and not paper.loss.psd_label_aware
    for key, value in {**DEMO_RECIPE, **REMEDIES}.items():
        assert get_key(demo, key) == value, key
    # The paper profile compares itself with the remedies, the demo with the paper's recipe.
    assert recipes_for("paper")["with the remedies"][1] == REMEDIES
    assert recipes_for("demo")["paper recipe"][1] == PAPER_RECIPE


def test_gradient_shares_hand_computed():
    history = pd.DataFrame({"train_grad_mse_prototypes": [3.0, 1.0], "train_grad_pas_prototypes": [1.0, 1.0],
                            "train_grad_mse_features": [5.0, 5.0]})
    shares = gradient_shares(history)
    # Epoch 1: 3/4 and 1/4; epoch 2: 1/2 and 1/2 -> means 0.625 and 0.375. Features are left out.
    assert shares["mse"] == pytest.approx(0.625) and shares["pas"] == pytest.approx(0.375)
    assert set(shares.index) == {"mse", "pas"}
    assert math.isnan(gradient_shares(history.assign(train_grad_mse_prototypes=0.0, train_grad_pas_prototypes=0.0))["pas"])
