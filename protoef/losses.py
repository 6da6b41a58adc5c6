"""ProtoEFNet's loss terms (SPEC §3), as plain functions plus one weighting module.

    L = 0.1 L_MSE + 10 L_clst + 30 L_PSD + 0.1 L_PAS + 1e-4 L_occ   (+ optional terms, weight 0)

Each function reproduces the reduction the SPEC states (which is the official code's),
including its quirks: masked-out similarities count as 0 in the cluster top-k, and the PAS
inner mean divides by P, not by the number of valid pairs. Gradients stay finite at the
degenerate points training can reach (identical prototypes, zero feature vectors).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import InterpolationMode, affine

from protoef.model import ProtoEFOutput, cosine_similarity


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """mean (ef_hat - ef)^2, EF in raw percent. (N,), (N,) -> ()"""
    return F.mse_loss(pred, target.to(pred.dtype))


def cluster_loss(similarities: Tensor, targets: Tensor, prototype_labels: Tensor,
                 delta: float = 5.0, k: int = 3) -> Tensor:
    """Pull each sample towards its most similar prototypes among those with |l - y| <= delta.

    similarities (N, P), targets (N,), prototype_labels (P,) -> ().
    Entries outside the label window are set to 0 (not -inf) before the top-k, as in the
    official code, so a sample with fewer than k nearby prototypes (or negative similarities)
    averages in zeros.
    """
    # Compare in the labels' dtype: the label grid defines where the window edges fall.
    targets = targets.to(prototype_labels.dtype)
    near = (prototype_labels.unsqueeze(0) - targets.unsqueeze(1)).abs() <= delta  # (N, P)
    masked = similarities * near.to(similarities.dtype)                          # (N, P)
    top = masked.topk(min(k, masked.shape[1]), dim=1).values                      # (N, k)
    return -top.mean()


def psd_loss(similarities: Tensor) -> Tensor:
    """Prototype-sample distance: every prototype should be close to some sample in the batch.

    d_ij = 1 - s_ij in [0, 2]; L = -mean_j ln(1 - min_i d_ij / 2). (N, P) -> ()
    """
    distances = 1.0 - similarities                    # (N, P)
    nearest = distances.min(dim=0).values             # (P,)
    # Only when a prototype is exactly opposite (s = -1) to every sample is the argument 0;
    # the clamp keeps the loss finite there and changes nothing elsewhere.
    closeness = (1.0 - nearest / 2.0).clamp_min(torch.finfo(nearest.dtype).tiny)
    return -torch.log(closeness).mean()


def pas_loss(prototypes: Tensor, prototype_labels: Tensor, delta: float = 5.0,
             eps: float = 1e-6) -> Tensor:
    """Prototype Angular Separation: push apart prototypes whose labels differ by more than delta.

    prototypes (P, D), prototype_labels (P,) -> ().
    theta_jk = angle between p_j and p_k; m_jk = [|l_j - l_k| > delta and j != k];
    L = -(1/P) sum_j (1/P) sum_k m_jk ln(theta_jk / pi + eps).
    """
    num_prototypes = prototypes.shape[0]
    cos = cosine_similarity(prototypes.unsqueeze(1), prototypes.unsqueeze(0))  # (P, P)
    cos = cos.clamp(-1.0 + eps, 1.0 - eps)
    # atan2 instead of arccos: arccos' derivative is infinite at +-1, atan2's is not.
    theta = torch.atan2(torch.sqrt(1.0 - cos ** 2), cos)                       # (P, P) in (0, pi)
    angular_similarity = 1.0 - theta / math.pi
    label_gap = (prototype_labels.unsqueeze(1) - prototype_labels.unsqueeze(0)).abs()  # (P, P)
    off_diagonal = ~torch.eye(num_prototypes, dtype=torch.bool, device=prototypes.device)
    far = (label_gap > delta) & off_diagonal                                    # strict: |dl| = delta is not far
    log_separation = torch.log(1.0 - angular_similarity + eps) * far.to(cos.dtype)  # (P, P)
    return -log_separation.mean(dim=1).mean()  # inner mean divides by P, not by the pair count


def occurrence_loss(occurrence_maps: Tensor, background: Tensor, p: float = 2) -> Tensor:
    """Penalise occurrence mass outside the (dilated) left ventricle.

    occurrence_maps (N, P, T, H, W), background broadcastable to it (e.g. (N, 1, 1, H, W)).
    p-norm over (t, h, w) of B * M per sample and prototype, mean over samples, sum over
    prototypes -> ().
    """
    outside = background * occurrence_maps                                   # (N, P, T, H, W)
    norms = torch.linalg.vector_norm(outside, ord=p, dim=(-3, -2, -1))       # (N, P)
    return norms.mean(dim=0).sum()


def orthogonality_loss(prototypes: Tensor) -> Tensor:
    """Sum of cosine similarities over distinct prototype pairs (j < k). (P, D) -> ()"""
    cos = cosine_similarity(prototypes.unsqueeze(1), prototypes.unsqueeze(0))  # (P, P)
    return torch.triu(cos, diagonal=1).sum()


def theta_l1_loss(theta: Tensor) -> Tensor:
    """L1 norm of the head's theta. (P,) -> ()"""
    return theta.abs().sum()


def random_affine(generator: torch.Generator | None = None) -> dict:
    """Rotation in [-20, 20] degrees and isotropic scale in [0.6, 1.5] about the centre."""
    u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    return {"angle": -20.0 + 40.0 * u[0], "translate": [0, 0], "scale": 0.6 + 0.9 * u[1],
            "shear": [0.0, 0.0]}


def _affine_frames(clip: Tensor, params: dict) -> Tensor:
    """Apply the same 2-D affine to every frame: (N, C, T, H, W) -> (N, C, T, H, W)."""
    n, c, t, h, w = clip.shape
    frames = clip.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # (N*T, C, H, W)
    frames = affine(frames, **params, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    return frames.reshape(n, t, c, h, w).permute(0, 2, 1, 3, 4)


def transformation_loss(video: Tensor, occurrence_maps: Tensor, occurrence_fn,
                        params: dict | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Occurrence maps should be equivariant to a random affine A: M(A x) ~ A M(x).

    video (N, 3, T, H, W), occurrence_maps = occurrence_fn(video) (N, P, T', H', W').
    The affine acts about the frame centre, so the same parameters apply at both
    resolutions. L1 summed over everything, divided by N*P (the official 'mean').
    """
    params = params if params is not None else random_affine(generator)
    maps_of_transformed = occurrence_fn(_affine_frames(video, params))  # (N, P, T', H', W')
    transformed_maps = _affine_frames(occurrence_maps, params)          # (N, P, T', H', W')
    n, p = occurrence_maps.shape[:2]
    return (maps_of_transformed - transformed_maps).abs().sum() / (n * p)


class ProtoEFLoss(nn.Module):
    """Weighted sum of the terms; returns (total, {term name: unweighted value, detached}).

    The four cheap terms (mse, cluster, psd, pas) are always computed and logged, so an
    ablation with a weight of 0 still shows how that term behaves; occurrence needs the
    background mask; the optional terms are computed only when their weight is non-zero.
    """

    def __init__(self, *, mse: float = 0.1, cluster: float = 10.0, psd: float = 30.0,
                 pas: float = 0.1, occurrence: float = 1e-4, orthogonality: float = 0.0,
                 transformation: float = 0.0, theta_l1: float = 0.0, delta: float = 5.0,
                 k: int = 3, occurrence_p: float = 2) -> None:
        super().__init__()
        self.weights = {"mse": mse, "cluster": cluster, "psd": psd, "pas": pas,
                        "occurrence": occurrence, "orthogonality": orthogonality,
                        "transformation": transformation, "theta_l1": theta_l1}
        self.delta, self.k, self.occurrence_p = delta, k, occurrence_p

    def forward(self, output: ProtoEFOutput, targets: Tensor, model: nn.Module, *,
                background: Tensor | None = None, video: Tensor | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        w = self.weights
        labels = model.prototype_labels
        terms = {
            "mse": mse_loss(output.ef, targets),
            "cluster": cluster_loss(output.similarities, targets, labels, self.delta, self.k),
            "psd": psd_loss(output.similarities),
            "pas": pas_loss(model.prototypes, labels, self.delta),
        }
        if background is not None:
            terms["occurrence"] = occurrence_loss(output.occurrence_maps, background, self.occurrence_p)
        elif w["occurrence"] != 0:
            raise ValueError("the occurrence loss has a non-zero weight: pass background=")
        if w["orthogonality"] != 0:
            terms["orthogonality"] = orthogonality_loss(model.prototypes)
        if w["theta_l1"] != 0:
            terms["theta_l1"] = theta_l1_loss(model.theta)
        if w["transformation"] != 0:
            if video is None:
                raise ValueError("the transformation loss has a non-zero weight: pass video=")
            terms["transformation"] = transformation_loss(video, output.occurrence_maps, model.occurrence)
        # Weight-0 terms stay out of the sum (so an inf/NaN in a disabled term cannot leak in).
        total = sum(w[name] * value for name, value in terms.items() if w[name] != 0)
        if not isinstance(total, Tensor):  # every weight 0
            total = output.ef.sum() * 0.0
        return total, {name: value.detach() for name, value in terms.items()}


__all__ = [
    "ProtoEFLoss", "cluster_loss", "mse_loss", "occurrence_loss", "orthogonality_loss",
    "pas_loss", "psd_loss", "random_affine", "theta_l1_loss", "transformation_loss",
]
