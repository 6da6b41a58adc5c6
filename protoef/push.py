"""The push (prototype projection, SPEC §4) and the end of a run: test, predictions, artefacts.

Push: over the training set (deterministic clip per video, no augmentation, eval mode),
each prototype j looks only at samples whose true EF is within Δl of its label l_j and
takes the one with the highest similarity s_ij (smallest 1 − s). Then p_j ← that sample's
pooled feature f_ij and l_j ← its true EF ("dynamic" labels). **Decision** (SPEC §4): a
prototype with no sample within Δl falls back to the samples with the nearest label and a
warning is logged. The search streams over batches: no N×P×D feature bank is kept.
"""
from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import runs
from .model import ProtoEFNet

__all__ = ["PushResult", "push_prototypes", "finish_run"]
log = logging.getLogger(__name__)


@dataclass
class PushResult:
    prototypes: torch.Tensor  # (P, D) the chosen pooled features
    labels: torch.Tensor  # (P,) the chosen samples' true EF
    table: pd.DataFrame  # per prototype: source file, clip start, EF, similarity, fallback
    occurrence_maps: np.ndarray  # (P, T', H', W') each prototype's map on its source clip


@torch.no_grad()
def push_prototypes(model: ProtoEFNet, loader, *, delta: float, device=None, autocast=None) -> PushResult:
    """Find each prototype's nearest real training clip (see the module docstring)."""
    device = device or next(model.parameters()).device
    model.eval()
    labels = model.prototype_labels.detach().cpu().double()  # (P,) labels before the push
    num_prototypes = len(labels)
    # Two running winners per prototype: best within Δl, and best at the nearest label.
    best_sim = torch.full((num_prototypes,), -torch.inf, dtype=torch.float64)
    near_dist = torch.full((num_prototypes,), torch.inf, dtype=torch.float64)
    near_sim = torch.full((num_prototypes,), -torch.inf, dtype=torch.float64)
    winners: dict[str, list] = {"within": [None] * num_prototypes, "nearest": [None] * num_prototypes}
    for batch in tqdm(loader, desc="push", leave=False, dynamic_ncols=True):
        video = batch["video"].to(device)
        with autocast() if autocast else torch.autocast(device.type, enabled=False):
            output = model(video, return_features=True)
        sims = output.similarities.double().cpu()  # (B, P)
        targets = batch["ef"].double()  # (B,)
        distance = (targets[:, None] - labels[None, :]).abs()  # (B, P)
        starts = batch["clip_starts"]
        for j in range(num_prototypes):
            within = torch.where(distance[:, j] <= delta, sims[:, j], torch.tensor(-torch.inf, dtype=torch.float64))
            i = int(within.argmax())
            if within[i] > best_sim[j]:
                best_sim[j] = within[i]
                winners["within"][j] = _winner(batch, output, i, j, starts)
            d_min = distance[:, j].min()
            at_min = torch.where(distance[:, j] == d_min, sims[:, j], torch.tensor(-torch.inf, dtype=torch.float64))
            i = int(at_min.argmax())
            if d_min < near_dist[j] or (d_min == near_dist[j] and at_min[i] > near_sim[j]):
                near_dist[j], near_sim[j] = d_min, at_min[i]
                winners["nearest"][j] = _winner(batch, output, i, j, starts)
    rows, vectors, new_labels, maps = [], [], [], []
    for j in range(num_prototypes):
        fallback = winners["within"][j] is None
        if fallback:
            log.warning("push: prototype %d (label %.1f) has no training clip within Δl=%.1f; "
                        "using the nearest label (%.1f away)", j, labels[j], delta, near_dist[j])
        win = winners["nearest" if fallback else "within"][j]
        rows.append({"prototype": j, "label_before": float(labels[j]), "ef_label": win["ef"], "source_filename": win["filename"],
                     "clip_start": win["clip_start"], "similarity": win["similarity"], "fallback": fallback})
        vectors.append(win["feature"])
        new_labels.append(win["ef"])
        maps.append(win["occurrence_map"])
    return PushResult(torch.stack(vectors), torch.tensor(new_labels, dtype=torch.float32), pd.DataFrame(rows), np.stack(maps))


def _winner(batch, output, i: int, j: int, starts) -> dict:
    return {"filename": batch["filename"][i], "ef": float(batch["ef"][i]), "clip_start": int(starts[i].reshape(-1)[0]),
            "similarity": float(output.similarities[i, j]), "feature": output.features[i, j].float().cpu().clone(),
            "occurrence_map": output.occurrence_maps[i, j].float().cpu().numpy().copy()}


def _top_prototypes(weights: np.ndarray, labels: np.ndarray, top: int = 3) -> dict:
    order = np.argsort(-weights, axis=1)[:, :top]  # (N, top)
    columns = {}
    for rank in range(top):
        index = order[:, rank]
        columns[f"top{rank + 1}_prototype"] = index
        columns[f"top{rank + 1}_label"] = labels[index]
        columns[f"top{rank + 1}_beta"] = np.take_along_axis(weights, order[:, rank : rank + 1], 1)[:, 0]
    return columns


def _save_prototypes(out: pathlib.Path, result: PushResult) -> None:
    """The prototype artefacts as data; the pictures are drawn from them later (explain)."""
    folder = out / "prototypes"
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_csv(folder / "prototypes.csv", result.table)
    for row, occurrence_map in zip(result.table.itertuples(), result.occurrence_maps):
        path = folder / f"prototype_{row.prototype:02d}.npz"
        runs.write_npz(path, occurrence_map=occurrence_map, feature=result.prototypes[row.prototype].numpy(),
                       ef_label=row.ef_label, source_filename=row.source_filename, clip_start=row.clip_start)


def finish_run(model, config, sets, context, out: pathlib.Path, best_path: pathlib.Path) -> dict:
    """Best checkpoint → metrics before push → push → (head epochs) → metrics after → files."""
    from .train import _loader, evaluate, train_epoch

    state = runs.load_checkpoint(best_path, map_location=context.device)
    model.load_state_dict(state["model"])
    best_epoch = state["epoch"] + 1
    eval_batch = max(1, config.data.batch_size // max(1, config.data.test_clips))
    val_loader = _loader(sets["val"], config)
    test_loader = _loader(sets["test"], config, batch_size=eval_batch)
    metrics: dict = {"best_epoch": best_epoch, "val": {}, "test": {}}
    stage = "pre_push" if isinstance(model, ProtoEFNet) and config.optim.push else "final"
    metrics["val"][stage], _ = evaluate(model, val_loader, context, desc="validate")
    metrics["test"][stage], predictions = evaluate(model, test_loader, context, desc="test")
    if stage == "pre_push":
        result = push_prototypes(model, _loader(sets["push"], config), delta=config.loss.delta,
                                 device=context.device, autocast=context.autocast)
        model.set_prototypes(result.prototypes.to(context.device), result.labels.to(context.device))
        metrics["push"] = {"fallbacks": int(result.table["fallback"].sum()),
                           "mean_similarity": float(result.table["similarity"].mean())}
        if config.optim.head_epochs_after_push:
            # Only θ learns now: the prototypes must stay the real clips they were pushed to.
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            model.theta.requires_grad_(True)
            head_optimizer = torch.optim.Adam([model.theta], lr=config.optim.lr_head)
            head_loss = lambda output, target, core, **_: (torch.nn.functional.mse_loss(output.ef, target), {})  # noqa: E731
            for epoch in range(config.optim.head_epochs_after_push):
                torch.manual_seed(config.seed + 10_000 + epoch)
                train_epoch(model, _loader(sets["push"], config, shuffle_seed=config.seed + epoch), head_loss,
                            head_optimizer, context, desc=f"head epoch {epoch + 1}")
            for parameter in model.parameters():
                parameter.requires_grad_(True)
        metrics["val"]["post_push"], _ = evaluate(model, val_loader, context, desc="validate")
        metrics["test"]["post_push"], predictions = evaluate(model, test_loader, context, desc="test")
        _save_prototypes(out, result)
    table = pd.DataFrame({"filename": predictions["filename"], "ef": predictions["ef"], "prediction": predictions["prediction"]})
    if "weights" in predictions:
        labels = model.prototype_labels.cpu().numpy()
        table = table.assign(**_top_prototypes(predictions["weights"], labels))
    runs.write_csv(out / "predictions.csv", table)
    runs.save_checkpoint(out / "checkpoints" / "final.pt", {"model": model.state_dict(), "config": config.to_dict(),
                                                            "kind": config.model.kind, "epoch": best_epoch - 1})
    headline = metrics["test"].get("post_push", metrics["test"].get("final"))
    print(f"[train] test ({'after push' if stage == 'pre_push' else 'final'}): MAE {headline['mae']:.2f}  "
          f"RMSE {headline['rmse']:.2f}  R² {headline['r2']:.3f}  F1(<40) {headline['f1_40']:.3f}")
    runs.write_json(out / "metrics.json", metrics)  # written last: its presence marks a finished run
    return metrics
