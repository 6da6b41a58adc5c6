"""The synthetic warm start (the demo's stand-in for Kinetics-400): a disjoint corpus, one
cached pretraining run, and the same pretrained layers in ProtoEFNet and the black box."""

import pytest
import torch

from protoef.config import resolve
from protoef.data import read_file_list
from protoef.training.build import build_model, data_root
from protoef.training.lifecycle import ensure_warm_start
from protoef.training.runs import load_checkpoint
from protoef.training.warmstart import CORPUS_SEED, warm_start_config, warm_start_dir


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return resolve("smoke", {"data.cache_dir": str(cache), "model.weights": "synthetic-warmstart",
                             "model.warm_start_videos": 8, "model.warm_start_epochs": 1})


def test_warm_start_is_pretrained_once_on_a_disjoint_corpus(config):
    path = ensure_warm_start(config)
    assert path == warm_start_dir(config) / "backbone.pt" and path.is_file()
    corpus = data_root(warm_start_config(config))
    assert f"seed{CORPUS_SEED}" in corpus.name
    assert not set(read_file_list(corpus)["filename"]) & set(read_file_list(data_root(config))["filename"])
    # Pretraining starts from random weights, so the run's frozen stages (2 in the smoke
    # profile) must not freeze it; its stem and layer1 are what the runs then keep.
    assert config.model.frozen_stages == 2 and warm_start_config(config).model.frozen_stages == 0
    stamp = path.stat().st_mtime_ns
    assert ensure_warm_start(config) == path and path.stat().st_mtime_ns == stamp  # cached, not retrained


def test_both_models_start_from_the_pretrained_layers(config):
    path = ensure_warm_start(config)
    pretrained = torch.load(path, weights_only=True)
    run_state = load_checkpoint(warm_start_dir(config) / "run" / "checkpoints" / "final.pt")["model"]
    # The saved file is the pretraining run's final black box, in torchvision's layout.
    torch.testing.assert_close(pretrained["layer3.0.conv1.0.0.weight"], run_state["network.layer3.0.conv1.0.0.weight"])
    protoefnet = build_model(config, weights=path)
    blackbox_config = resolve("smoke", {"data.cache_dir": config.data.cache_dir, "model.kind": "blackbox"})
    blackbox = build_model(blackbox_config, weights=path)
    for key in ("stem.0.weight", "layer1.0.conv1.0.0.weight", "layer3.0.conv2.1.running_mean"):
        torch.testing.assert_close(protoefnet.backbone.state_dict()[key], pretrained[key])
        torch.testing.assert_close(blackbox.network.state_dict()[key], pretrained[key])
    # The black box also gets layer4; its EF head starts fresh at the mean EF.
    torch.testing.assert_close(blackbox.network.state_dict()["layer4.0.conv1.0.0.weight"], pretrained["layer4.0.conv1.0.0.weight"])
    assert blackbox.network.fc.bias.item() == pytest.approx(55.6)


def test_unresolved_warm_start_is_a_clear_error(config):
    with pytest.raises(ValueError, match="must be resolved first"):
        build_model(config)


def test_runs_that_would_pretrain_differently_never_share_a_cached_warm_start(config):
    base = {"data.cache_dir": config.data.cache_dir, "model.weights": "synthetic-warmstart",
            "model.warm_start_videos": 8, "model.warm_start_epochs": 1}
    shared = warm_start_dir(config)
    # Settings the black-box pretraining never reads: one warm start for all of them, so a
    # comparison of recipes, τ/Δl grid points or seeds starts every arm from the same backbone.
    for overrides in ({"model.tau": 0.5}, {"loss.delta": 2.5}, {"loss.mse": 0.1}, {"loss.separation": 0.0},
                      {"optim.lr_head": 1e-2}, {"optim.lr_backbone": 1e-4}, {"seed": 3}, {"data.num_workers": 1}):
        assert warm_start_dir(resolve("smoke", base | overrides)) == shared, overrides
    # Settings that change what it learns: each its own folder (before, the first run to ask
    # wrote a folder named by backbone, shape and budget only, and every later run reused it).
    others = [warm_start_dir(resolve("smoke", base | overrides)) for overrides in (
        {"data.augment": False}, {"data.rotation_degrees": 5.0}, {"data.oversample": False},
        {"data.oversample_threshold": 40.0}, {"optim.plateau_patience": 1}, {"optim.min_lr": 1e-5},
        {"model.warm_start_epochs": 2}, {"data.batch_size": 2}, {"data.period": 4})]
    assert shared not in others and len(set(others)) == len(others)
