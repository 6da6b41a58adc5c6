"""Embeddings of the pooled features and the prototypes (t-SNE, UMAP), and whether the
prototype geometry keeps the EF order (rank correlation of label distance vs angle)."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..data.clips import average_clips
from ..diagnostics import pairwise_angles
from ..model import ProtoEFNet, eval_mode

__all__ = ["PooledFeatures", "pooled_features", "embed", "embed_with_prototypes", "label_angle_rank_correlation"]


# --------------------------------------------------------------------------- embeddings

class PooledFeatures(NamedTuple):
    features: np.ndarray  # (N, P, D) pooled f_k per video (mean over its clips)
    efs: np.ndarray  # (N,) true EF
    weights: np.ndarray  # (N, P) β (mean over clips)
    filenames: list


@torch.no_grad()
def pooled_features(model: ProtoEFNet, loader, *, device=None) -> PooledFeatures:
    """Pooled features f_k (N, P, D) of every video of a loader (single-clip items, or
    multi-clip batches from `collate_clips`, averaged per video), with EFs and β."""
    device = device or next(model.parameters()).device
    features, weights, efs, names = [], [], [], []
    with eval_mode(model):
        for batch in loader:
            output = model(batch["video"].to(device), return_features=True)
            f, w = output.features.float().cpu(), output.weights.float().cpu()
            if "num_clips" in batch:  # (ΣK, …) → per video
                counts = batch["num_clips"].tolist()
                f, w = average_clips(f, counts), average_clips(w, counts)
            features.append(f.numpy())
            weights.append(w.numpy())
            efs.append(torch.as_tensor(batch["ef"]).double().numpy())
            names.extend(batch["filename"])
    return PooledFeatures(np.concatenate(features), np.concatenate(efs), np.concatenate(weights), names)


def embed(points, *, method: str = "tsne", seed: int = 0, cosine: bool = True) -> np.ndarray:
    """(N, D) → (N, 2) with t-SNE (scikit-learn; perplexity min(30, (N−1)/3), at least 1) or
    UMAP (umap-learn; n_neighbors min(15, N−1), at least 2; random init below 50 points).
    ``cosine``: rows are L2-normalised first, so distances follow the model's cosine similarity."""
    x = np.asarray(points, dtype=np.float64)
    if cosine:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 3:  # nothing to learn: a line
        return np.stack([np.arange(n, dtype=np.float64), np.zeros(n)], axis=1)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = max(1.0, min(30.0, (n - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), random_state=seed,
                            init="spectral" if n >= 50 else "random", n_jobs=1)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")


def embed_with_prototypes(pooled: PooledFeatures, prototypes, prototype_labels, *, which: str = "top",
                          method: str = "tsne", seed: int = 0) -> pd.DataFrame:
    """Videos and prototype vectors (P, D) in one 2-D map. A video is represented by
    ``which="top"``: the pooled feature f_k of its highest-β prototype k (the very vector
    that was compared with p_k, so it lives in the prototypes' space), or ``"mean"``: the mean
    of f_k over prototypes. Returns a DataFrame x, y, ef, kind ("video"/"prototype"),
    index (video or prototype index), prototype (a video's top prototype), for
    `protoef.analysis.plots.embedding_scatter`."""
    prototypes = np.asarray(prototypes.detach().cpu() if isinstance(prototypes, Tensor) else prototypes, np.float64)
    labels = np.asarray(prototype_labels.detach().cpu() if isinstance(prototype_labels, Tensor) else prototype_labels, np.float64)
    best = pooled.weights.argmax(axis=1)
    if which == "top":
        videos = pooled.features[np.arange(len(best)), best]
    elif which == "mean":
        videos = pooled.features.mean(axis=1)
    else:
        raise ValueError(f"which must be 'top' or 'mean', got {which!r}")
    xy = embed(np.concatenate([videos, prototypes]), method=method, seed=seed)
    n = len(videos)
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "ef": np.concatenate([pooled.efs, labels]),
                         "kind": ["video"] * n + ["prototype"] * len(prototypes),
                         "index": np.concatenate([np.arange(n), np.arange(len(prototypes))]),
                         "prototype": np.concatenate([best, np.arange(len(prototypes))])})


def label_angle_rank_correlation(prototypes, labels) -> float:
    """Spearman correlation, over prototype pairs j < k, between |l_j − l_k| and the angle
    between p_j and p_k: near 1 when prototypes far apart in EF are far apart in angle (the
    embedding keeps EF order), near 0 when unrelated. NaN if either side is constant."""
    from scipy.stats import spearmanr

    l = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels, np.float64)
    j, k = np.triu_indices(len(l), k=1)
    angles = pairwise_angles(prototypes)[j, k]
    gaps = np.abs(l[j] - l[k])
    if np.ptp(angles) == 0 or np.ptp(gaps) == 0:
        return math.nan
    return float(spearmanr(gaps, angles).statistic)
