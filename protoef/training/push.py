"""The push: prototype projection onto real training clips (docs/method.md §4).

Push: over the training set (deterministic clip per video, no augmentation, eval mode),
each prototype j looks only at samples whose true EF is within Δl of its label l_j and
takes the one with the highest similarity s_ij (smallest 1 − s). Then p_j ← that sample's
pooled feature f_ij and l_j ← its true EF ("dynamic" labels). **Decision** (docs/method.md §4, §7): a
prototype with no sample within Δl falls back to the samples with the nearest label and a
warning is logged. The search streams over batches: no N×P×D feature bank is kept unless
asked for (``keep_features``: what the run's end reuses).
What happens around the push (metrics before and after, head epochs, the artefacts on
disk) is the run's lifecycle: `protoef.training.lifecycle`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..model import ProtoEFNet, eval_mode
from .loops import EncodedSet, clip_mode, progress

__all__ = ["PushResult", "push_prototypes", "similarity_reference"]
log = logging.getLogger(__name__)


@dataclass
class PushResult:
    prototypes: torch.Tensor  # (P, D) the chosen pooled features
    labels: torch.Tensor  # (P,) the chosen samples' true EF
    table: pd.DataFrame  # per prototype: source file, clip start, EF, similarity, fallback
    occurrence_maps: np.ndarray  # (P, T', H', W') each prototype's map on its source clip
    encoded: EncodedSet | None = None  # the push set's pooled features, when asked for (keep_features)


@torch.no_grad()
def push_prototypes(model: ProtoEFNet, loader, *, delta: float, device=None, autocast=None,
                    unique: bool = True, keep_features: bool = False) -> PushResult:
    """Find each prototype's nearest real training clip (see the module docstring).

    ``unique``: a prototype takes the most similar clip within Δl that no other prototype
    holds yet; prototypes choose greedily, the one with the most similar candidate first, and
    a prototype shares a clip only when every candidate in its window is taken (``shared``
    in the table). Without it, each prototype takes its own best clip (the official rule).
    ``keep_features``: also return the pass's pooled features (`PushResult.encoded`, N × P ×
    D floats), from which the pushed model's TRAIN predictions follow without another pass.
    """
    device = device or next(model.parameters()).device
    with eval_mode(model):
        return _push(model, loader, delta=delta, device=device, autocast=autocast, unique=unique,
                     encoded=EncodedSet(clip_mode(loader)) if keep_features else None)


def _push(model: ProtoEFNet, loader, *, delta: float, device, autocast, unique: bool,
          encoded: EncodedSet | None) -> PushResult:
    labels = model.prototype_labels.detach().cpu().double()  # (P,) labels before the push
    num_prototypes = len(labels)
    # Per prototype, the `keep` most similar clips within Δl: with keep = P, greedy selection
    # always finds a free clip when the window holds one (at most P − 1 are taken before).
    keep = num_prototypes if unique else 1
    candidates: list[list[tuple[float, dict]]] = [[] for _ in range(num_prototypes)]
    # Fallback winner per prototype: the best clip at the nearest label.
    near_dist = torch.full((num_prototypes,), torch.inf, dtype=torch.float64)
    near_sim = torch.full((num_prototypes,), -torch.inf, dtype=torch.float64)
    nearest: list[dict | None] = [None] * num_prototypes
    for batch in progress(loader, desc="push"):
        video = batch["video"].to(device)
        with autocast() if autocast else torch.autocast(device.type, enabled=False):
            output = model(video, return_features=True)
        if encoded is not None:
            encoded.add(batch, output.features)
        sims = output.similarities.double().cpu()  # (B, P)
        targets = batch["ef"].double()  # (B,)
        distance = (targets[:, None] - labels[None, :]).abs()  # (B, P)
        starts = batch["clip_starts"]
        for j in range(num_prototypes):
            within = torch.nonzero(distance[:, j] <= delta).flatten().tolist()
            best = sorted(within, key=lambda i: -float(sims[i, j]))[:keep]
            if best and (len(candidates[j]) < keep or float(sims[best[0], j]) > candidates[j][-1][0]):
                merged = candidates[j] + [(float(sims[i, j]), _winner(batch, output, i, j, starts)) for i in best]
                candidates[j] = sorted(merged, key=lambda pair: -pair[0])[:keep]
            d_min = distance[:, j].min()
            at_min = torch.where(distance[:, j] == d_min, sims[:, j], torch.tensor(-torch.inf, dtype=torch.float64))
            i = int(at_min.argmax())
            if d_min < near_dist[j] or (d_min == near_dist[j] and at_min[i] > near_sim[j]):
                near_dist[j], near_sim[j] = d_min, at_min[i]
                nearest[j] = _winner(batch, output, i, j, starts)
    chosen: dict[int, tuple[dict, bool]] = {}
    taken: set[str] = set()
    for j in sorted(range(num_prototypes), key=lambda j: -candidates[j][0][0] if candidates[j] else math.inf):
        if not candidates[j]:
            continue
        free = [win for _, win in candidates[j] if win["filename"] not in taken]
        win = free[0] if free else candidates[j][0][1]
        chosen[j] = (win, not free)
        taken.add(win["filename"])
    rows, vectors, new_labels, maps = [], [], [], []
    for j in range(num_prototypes):
        fallback = j not in chosen
        if fallback:
            log.warning("push: prototype %d (label %.1f) has no training clip within Δl=%.1f; "
                        "using the nearest label (%.1f away)", j, labels[j], delta, near_dist[j])
        win, shared = chosen.get(j, (nearest[j], False))
        rows.append({"prototype": j, "label_before": float(labels[j]), "ef_label": win["ef"], "source_filename": win["filename"],
                     "clip_start": win["clip_start"], "similarity": win["similarity"], "fallback": fallback,
                     "shared": shared})
        vectors.append(win["feature"])
        new_labels.append(win["ef"])
        maps.append(win["occurrence_map"])
    return PushResult(torch.stack(vectors), torch.tensor(new_labels, dtype=torch.float32), pd.DataFrame(rows), np.stack(maps),
                      encoded)


def _winner(batch, output, i: int, j: int, starts) -> dict:
    return {"filename": batch["filename"][i], "ef": float(batch["ef"][i]), "clip_start": int(starts[i].reshape(-1)[0]),
            "similarity": float(output.similarities[i, j]), "feature": output.features[i, j].float().cpu().clone(),
            "occurrence_map": output.occurrence_maps[i, j].float().cpu().numpy().copy()}


# The low quantile of the TRAIN clips' best similarity recorded beside the minimum: with
# many clips the minimum is one outlier, the quantile the edge of the bulk.
SIMILARITY_QUANTILE = 0.05


def similarity_reference(maxima: np.ndarray) -> dict:
    """metrics.json ``train_similarity``: the minimum and the low quantile of the TRAIN
    clips' best similarities, and how many clips they are over."""
    maxima = np.asarray(maxima, dtype=np.float64)
    if not len(maxima):
        return {"clips": 0}
    return {"clips": int(len(maxima)), "minimum": float(maxima.min()),
            f"quantile_{round(SIMILARITY_QUANTILE * 100):02d}": float(np.quantile(maxima, SIMILARITY_QUANTILE))}
