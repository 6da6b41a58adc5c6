"""One measurement in a fresh process, so its peak RSS belongs to it alone.

    python -m benchmarks.child '{"what": "step", "model": "protoef", "pooling": "einsum",
                                 "backbone": "r2plus1d_18", "batch": 1, "frames": 64,
                                 "size": 112, "prototypes": 40, "reps": 1}'

what: "step" (forward, loss, backward, Adam step), "infer" (forward under no_grad) or
"pool" (the pooling op alone, forward + backward on random (N, P|D, T', H', W') tensors).
output_stride, frozen_stages and feature_stage (model "protoef"): as in protoef.config. model: "protoef", "backbone" (truncated backbone alone, loss = mean of squares) or
"blackbox". threads: intra-op threads (default: the pinned count). pooling: "einsum" (the package's) or "naive" (the official code's broadcast
product). Prints one JSON line: step times, RSS before, peak RSS (VmHWM, reset just before the
timed calls), delta = peak - before.
"""
from __future__ import annotations

import json
import sys
import time


def naive_pool(occurrence_maps, feature_maps):
    # (N, P, 1, T, H, W) * (N, 1, D, T, H, W) -> (N, P, D, T, H, W) -> (N, P, D): the official code
    return (occurrence_maps.unsqueeze(2) * feature_maps.unsqueeze(1)).sum(dim=(3, 4, 5))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: that one inherits the parent's
    RSS at fork, so a child of a big process would report the parent's peak."""
    return _status_kib("VmHWM") * 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak belongs to the timed calls."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_step(spec: dict):
    """A zero-argument callable running one step of `spec` (also used in-process)."""
    import torch

    import protoef.model as model_module
    from protoef.losses import ProtoEFLoss, mse_loss

    n, t, size = spec["batch"], spec["frames"], spec["size"]
    what, kind = spec.get("what", "step"), spec.get("model", "protoef")
    if spec.get("pooling", "einsum") == "naive":
        model_module.pool_features = naive_pool
    if what == "pool":
        shape = (t // 4, size // 8, size // 8)
        maps = torch.rand(n, spec["prototypes"], *shape, requires_grad=True)
        features = torch.randn(n, 256, *shape, requires_grad=True)
        pool = model_module.pool_features

        def run():
            maps.grad = features.grad = None
            pool(maps, features).sum().backward()
        return run
    if kind == "head":  # ProtoEFNet minus its backbone, on a fixed backbone output (needs its gradient)
        model = model_module.ProtoEFNet(num_prototypes=spec["prototypes"], backbone=spec["backbone"]).train()
        with torch.no_grad():
            x = model.backbone(torch.randn(n, 3, t, size, size))
        x.requires_grad_(True)
        parameters = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
        optimizer = torch.optim.Adam(parameters, lr=1e-4)
        loss_fn = ProtoEFLoss()
        targets = torch.rand(n) * 80 + 10
        background = torch.rand(n, 1, 1, *x.shape[-2:])

        def run():
            optimizer.zero_grad(set_to_none=True)
            x.grad = None
            occurrence_maps = model.occurrence_module(x)
            features = model_module.pool_features(occurrence_maps, model.feature_module(x))
            similarities = model_module.cosine_similarity(features, model.prototypes.unsqueeze(0))
            ef, weights = model.head(similarities)
            output = model_module.ProtoEFOutput(ef, similarities, occurrence_maps, weights)
            loss, _ = loss_fn(output, targets, model, background=background)
            loss.backward()
            optimizer.step()
        return run
    if kind == "protoef":
        model = model_module.ProtoEFNet(num_prototypes=spec["prototypes"], backbone=spec["backbone"],
                                        output_stride=spec.get("output_stride", 8), frozen_stages=spec.get("frozen_stages", 0),
                                        feature_stage=spec.get("feature_stage", "layer3"))
    elif kind == "backbone":
        model = model_module.build_backbone(spec["backbone"])
    elif kind == "blackbox":
        model = model_module.BlackBoxRegressor(backbone=spec["backbone"])
    else:
        raise ValueError(kind)
    video = torch.randn(n, 3, t, size, size)
    targets = torch.rand(n) * 80 + 10
    if what == "infer":
        model.eval()

        def run():
            with torch.no_grad():
                model(video)
        return run
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = ProtoEFLoss()
    with torch.no_grad():
        feature_hw = model.backbone(video[:1]).shape[-2:] if kind == "protoef" else None
    background = torch.rand(n, 1, 1, *feature_hw) if feature_hw is not None else None

    def run():
        optimizer.zero_grad(set_to_none=True)
        out = model(video)
        if kind == "protoef":
            loss, _ = loss_fn(out, targets, model, background=background)
        elif kind == "blackbox":
            loss = mse_loss(out.ef, targets)
        else:
            loss = out.square().mean()
        loss.backward()
        optimizer.step()
    return run


def measure(spec: dict) -> dict:
    import torch

    torch.manual_seed(spec.get("seed", 0))
    run = make_step(spec)  # imports protoef, which pins the thread count
    if "threads" in spec:  # after the pin: a child with another intra-op thread count
        torch.set_num_threads(spec["threads"])
    before = rss_bytes()
    peak_reset = reset_peak()
    times = []
    for _ in range(spec.get("reps", 1)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak = peak_rss_bytes()
    return {**spec, "seconds": times, "rss_before_bytes": before, "peak_rss_bytes": peak,
            "delta_bytes": max(peak - before, 0), "peak_reset": peak_reset, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
