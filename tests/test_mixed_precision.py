"""The mixed-precision path (bf16 autocast, the CUDA default) exercised on the CPU, where
bf16 autocast exists too: forward, loss and backward, the push and the evaluation, each
compared with fp32 on the same weights and the same clips (demo shape: 8 × 32², P = 40).

Tolerances, and why: bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 % per
op). A cosine similarity in [-1, 1] accumulated over D = 256 products is then good to
~1e-3; we allow 5e-3. The head turns similarities into β = softmax(θ s / τ) with θ/τ = 5,
so a 1e-3 error moves EF = Σ β l (labels 10–90) by 80 × 5 × 1e-3 = 0.4 points at worst
(β split between the two extreme labels), far less when β is spread; we allow 0.25 EF
points, a sixteenth of the paper's MAE of 4 (measured with random weights: ≤ 0.005 EF
points, similarities ≤ 4e-4, loss terms ≤ 0.1 %). Loss terms: 2 % relative.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from protoef.config import resolve
from protoef.data import synthetic
from protoef.training.build import RunContext, build_loss, build_model, feature_size, split_dataset
from protoef.training.loops import evaluate, train_epoch
from protoef.training.push import push_prototypes

pytestmark = pytest.mark.slow  # bf16 convolutions are emulated under the pinned AVX2 kernels: ~45 s in all

SIMILARITY_TOL = 5e-3
EF_TOL = 0.25
LOSS_RTOL = 0.02


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # 8 videos (6 TRAIN clips): the comparisons below need a batch, not a data set; 16 cost
    # twice the time for the same margins (gradient cosine 0.94 with either).
    root = synthetic.generate(tmp_path_factory.mktemp("bf16-data"), videos=8, seed=5, workers=1, progress=False)
    config = resolve("demo", {"data.root": str(root), "data.cache_dir": str(tmp_path_factory.mktemp("bf16-cache")),
                              "device": "cpu", "model.weights": None,  # random weights, as measured
                              # The paper's strides and a fully trained backbone (the GPU setting
                              # where bf16 runs): the tolerances below were measured at 4×4 maps.
                              "model.output_stride": 8, "model.frozen_stages": 0, "data.background_dilation": 1})
    config.data.mean, config.data.std = 0.13, 0.19  # about the synthetic statistics; no need to measure them
    torch.manual_seed(0)
    model = build_model(config)
    sets = {"train": split_dataset(config, "TRAIN", clips="random", with_masks=True, feature_size=feature_size(config),
                                   background_dilation=config.data.background_dilation),
            "push": split_dataset(config, "TRAIN", clips="deterministic")}
    return config, model, sets


def contexts(config):
    fp32, bf16 = RunContext(config), RunContext(config, cpu_autocast=True)
    assert not fp32.amp and bf16.amp  # runs on the CPU stay fp32; the test switch turns autocast on
    return fp32, bf16


def pushed(model, loader):
    """A copy of `model` pushed (fp32) onto real clips, so similarities reach ~1 and β is
    far from uniform: a harder comparison than the near-uniform β of random weights."""
    model = copy.deepcopy(model)
    result = push_prototypes(model, loader, delta=5.0)
    model.set_prototypes(result.prototypes, result.labels)
    return model


def test_bf16_forward_runs_the_backbone_in_bf16_and_the_head_in_fp32(setup):
    config, model, sets = setup
    _, bf16 = contexts(config)
    model = pushed(model, DataLoader(sets["push"], batch_size=8))
    video = next(iter(DataLoader(sets["push"], batch_size=8)))["video"]  # (8, 3, 8, 32, 32)
    model.eval()
    with torch.no_grad():
        reference = model(video, return_features=True)
        with bf16.autocast():
            low = model(video, return_features=True)
            pooled, occurrence_maps, feature_maps = model.encode(video)
    # Autocast really is on: the convolutions and the pooling einsum run in bf16...
    assert feature_maps.dtype == occurrence_maps.dtype == pooled.dtype == torch.bfloat16
    # ...and the code lifts the pooled features to the prototypes' fp32 before the cosine,
    # so the similarities, β and EF (the head) are fp32; the maps stay bf16 (the loss casts them).
    assert low.features.dtype == low.similarities.dtype == low.weights.dtype == low.ef.dtype == torch.float32
    assert low.occurrence_maps.dtype == torch.bfloat16
    assert model.prototypes.dtype == model.theta.dtype == torch.float32
    assert reference.similarities.max() > 0.9  # the pushed prototypes are some of these clips
    assert (low.similarities - reference.similarities).abs().max() <= SIMILARITY_TOL
    assert (low.ef - reference.ef).abs().max() <= EF_TOL
    assert torch.allclose(low.weights.sum(1), torch.ones(len(video)), atol=1e-5)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_bf16_training_step_has_finite_losses_and_gradients_close_to_fp32(setup):
    config, model, sets = setup
    loss_fn = build_loss(config)
    results = {}
    # oneDNN's bf16 Conv3d weight gradient is wrong (NaN or ~1e35) when a temporal kernel of
    # 3 meets T' = 2 frames, as in the demo's layer3 (torch 2.14 on x86, seen while writing
    # this test); the paper shape has T' = 16 and CUDA uses cuDNN. The native CPU kernels
    # are right, so the comparison runs without oneDNN: it tests this package, not oneDNN.
    with torch.backends.mkldnn.flags(enabled=False):
        for context in contexts(config):
            trained = copy.deepcopy(model)
            optimizer = torch.optim.Adam(trained.parameters(), lr=1e-3)
            torch.manual_seed(1)  # the same clips and rotations for both precisions
            # One batch of every training video: one step from the same weights, so the
            # losses and gradients differ by rounding only (later steps would diverge).
            loader = DataLoader(sets["train"], batch_size=len(sets["train"]))
            losses = train_epoch(trained, loader, loss_fn, optimizer, context, desc="step")
            results["bf16" if context.amp else "fp32"] = (losses, trained)
    (fp32_losses, fp32_model), (bf16_losses, bf16_model) = results["fp32"], results["bf16"]
    assert set(bf16_losses) == set(fp32_losses) >= {"loss", "mse", "cluster", "psd", "pas", "occurrence"}
    for name, value in bf16_losses.items():
        assert np.isfinite(value), name
        assert value == pytest.approx(fp32_losses[name], rel=LOSS_RTOL, abs=1e-3), name
    gradients = {}
    for precision, trained in (("fp32", fp32_model), ("bf16", bf16_model)):
        for name, parameter in trained.named_parameters():
            assert parameter.dtype == torch.float32 and torch.isfinite(parameter).all(), name  # fp32 master weights
            assert parameter.grad is not None and parameter.grad.dtype == torch.float32, name
            assert torch.isfinite(parameter.grad).all(), (precision, name)
        gradients[precision] = torch.cat([p.grad.flatten() for p in trained.parameters()])
    # The same descent direction up to rounding: the head's θ and the whole network.
    assert cosine(bf16_model.theta.grad, fp32_model.theta.grad) > 0.99
    # Measured 0.94 over all parameters with the demo recipe (separation and soft-label terms
    # included, random weights, 16 clips; 0.939 with the 6 clips used now); the 0.98 first
    # written here had never run. A sign or scale bug gives ~0 or negative, which this still catches.
    assert cosine(gradients["bf16"], gradients["fp32"]) > 0.9


def test_bf16_push_and_evaluation_match_fp32(setup):
    config, model, sets = setup
    fp32, bf16 = contexts(config)
    loader = DataLoader(sets["push"], batch_size=8)
    reference = push_prototypes(copy.deepcopy(model), loader, delta=5.0)
    low = push_prototypes(copy.deepcopy(model), loader, delta=5.0, autocast=bf16.autocast)
    assert low.prototypes.dtype == torch.float32 and torch.isfinite(low.prototypes).all()
    assert list(low.table["source_filename"]) == list(reference.table["source_filename"])
    np.testing.assert_allclose(low.table["similarity"], reference.table["similarity"], atol=SIMILARITY_TOL)
    scale = reference.prototypes.abs().max()
    assert (low.prototypes - reference.prototypes).abs().max() <= 0.02 * scale  # bf16 features, 2 % of their range
    model = pushed(model, loader)
    metrics_fp32, predictions_fp32 = evaluate(model, loader, fp32)
    metrics_bf16, predictions_bf16 = evaluate(model, loader, bf16)
    assert np.abs(predictions_bf16["prediction"] - predictions_fp32["prediction"]).max() <= EF_TOL
    assert np.isfinite(predictions_bf16["weights"]).all() and predictions_bf16["weights"].dtype == np.float32
    assert metrics_bf16["mae"] == pytest.approx(metrics_fp32["mae"], abs=EF_TOL)
