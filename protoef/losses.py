"""ProtoEFNet's loss terms (docs/method.md §3), as plain functions plus one weighting module.

    L = 0.1 L_MSE + 10 L_clst + 30 L_PSD + 0.1 L_PAS + 1e-4 L_occ   (+ optional terms, weight 0)

The optional terms include this project's remedies against the collapse of every
similarity towards 1 (separation, soft_label, the label-aware PSD) and for maps that find the
LV and are peaked (the occurrence share, concentration); they are off in the paper's recipe.
Of the two candidates for a local β (issue 17), reverse_soft_label is in the demo recipe and
expected_label_error is off in every profile.

Each function reproduces the reduction docs/method.md §3 states (which is the official code's),
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


def psd_loss(similarities: Tensor, targets: Tensor | None = None, prototype_labels: Tensor | None = None,
             delta: float = 5.0) -> Tensor:
    """Prototype-sample distance: every prototype should be close to some sample in the batch.

    d_ij = 1 - s_ij in [0, 2]; L = -mean_j ln(1 - min_i d_ij / 2). (N, P) -> ()

    Label-aware variant (remedy, off in the paper): with `targets` (N,) and
    `prototype_labels` (P,), prototype j's minimum runs only over the samples with
    |y_i - l_j| <= delta (like the push), and prototypes with no such sample in the batch
    are left out of the mean (0 when none has one). The paper's form pulls every prototype
    towards its nearest clip whatever that clip's EF.
    """
    distances = 1.0 - similarities                    # (N, P)
    if targets is None:
        nearest = distances.min(dim=0).values         # (P,)
        present = torch.ones_like(nearest, dtype=torch.bool)
    else:
        window = (targets.to(prototype_labels.dtype)[:, None] - prototype_labels[None, :]).abs() <= delta  # (N, P)
        # 3 is above any cosine distance, so out-of-window entries never win the minimum.
        nearest = torch.where(window, distances, torch.full_like(distances, 3.0)).min(dim=0).values  # (P,)
        present = window.any(dim=0)
        nearest = torch.where(present, nearest, torch.zeros_like(nearest))
    # Only when a prototype is exactly opposite (s = -1) to every sample is the argument 0;
    # the clamp keeps the loss finite there and changes nothing elsewhere.
    closeness = (1.0 - nearest / 2.0).clamp_min(torch.finfo(nearest.dtype).tiny)
    per_prototype = -torch.log(closeness) * present.to(closeness.dtype)
    return per_prototype.sum() / present.sum().clamp_min(1)


def separation_loss(similarities: Tensor, targets: Tensor, prototype_labels: Tensor,
                    delta: float = 5.0) -> Tensor:
    """Mean similarity to the prototypes whose label is more than delta from the sample's EF
    (remedy, weight 0 in the paper): lowering it opens a gap between in-window and
    out-of-window similarities, which no paper term asks for.

    similarities (N, P), targets (N,), prototype_labels (P,) -> (); per sample the mean over
    its far prototypes, then the mean over samples that have any (0 when none has).
    """
    far = ((prototype_labels[None, :] - targets.to(prototype_labels.dtype)[:, None]).abs() > delta)  # (N, P)
    far = far.to(similarities.dtype)
    count = far.sum(dim=1)                                                      # (N,)
    per_sample = (similarities * far).sum(dim=1) / count.clamp_min(1)           # (N,)
    has_far = (count > 0).to(similarities.dtype)
    return (per_sample * has_far).sum() / has_far.sum().clamp_min(1)


def _soft_label_logits(targets: Tensor, prototype_labels: Tensor, sigma: float) -> Tensor:
    """-(l_k - y_i)^2 / (2 sigma^2), the unnormalised log of the soft-label target. (N,), (P,) -> (N, P)"""
    gap = prototype_labels[None, :] - targets.to(prototype_labels.dtype)[:, None]  # (N, P)
    return -gap.square() / (2.0 * sigma ** 2)


def soft_label_target(targets: Tensor, prototype_labels: Tensor, sigma: float = 5.0) -> Tensor:
    """q_ik proportional to exp(-(l_k - y_i)^2 / (2 sigma^2)), rows summing to 1. (N,), (P,) -> (N, P)"""
    return torch.softmax(_soft_label_logits(targets, prototype_labels, sigma), dim=1)


def soft_label_log_target(targets: Tensor, prototype_labels: Tensor, sigma: float = 5.0) -> Tensor:
    """ln q of `soft_label_target`, computed as a log-softmax (finite where q underflows). (N, P)"""
    return torch.log_softmax(_soft_label_logits(targets, prototype_labels, sigma), dim=1)


def soft_label_loss(weights: Tensor, targets: Tensor, prototype_labels: Tensor, sigma: float = 5.0,
                    eps: float = 1e-12) -> Tensor:
    """KL(q || beta) with q = `soft_label_target` (remedy, weight 0 in the paper): beta should
    rest on the prototypes whose label is near the true EF, not be a flat mixture tilted
    towards it. 0 exactly when beta = q. weights (N, P) -> (), mean over samples."""
    q = soft_label_target(targets, prototype_labels, sigma).to(weights.dtype)  # (N, P)
    kl = q * (torch.log(q.clamp_min(eps)) - torch.log(weights.clamp_min(eps)))
    return kl.sum(dim=1).mean()


def reverse_soft_label_loss(weights: Tensor, targets: Tensor, prototype_labels: Tensor, sigma: float = 5.0,
                            eps: float = 1e-12) -> Tensor:
    """KL(beta || q), q the soft-label target (`soft_label_target`, same sigma; remedy candidate
    of issue 17, weight 0 by default). Mode-seeking where KL(q || beta) is mass-covering: mass
    of beta on labels far from the EF costs beta * (l - y)^2 / (2 sigma^2), so a wide beta is
    punished, not only a beta that misses the truth. 0 exactly when beta = q.
    weights (N, P) -> (), mean over samples; ln beta clamped at eps (0 * ln 0 counts as 0)."""
    log_q = soft_label_log_target(targets, prototype_labels, sigma).to(weights.dtype)  # (N, P)
    kl = weights * (torch.log(weights.clamp_min(eps)) - log_q)                          # (N, P)
    return kl.sum(dim=1).mean()


def expected_label_error_loss(weights: Tensor, targets: Tensor, prototype_labels: Tensor) -> Tensor:
    """mean_i sum_k beta_ik (l_k - y_i)^2 in EF points squared (remedy candidate of issue 17,
    weight 0 by default). Equal to (y_hat_i - y_i)^2 + Var_beta(l): the squared error plus the
    label variance under beta, so unlike MSE it asks for a narrow beta, not only its mean.
    weights (N, P), targets (N,), prototype_labels (P,) -> ()."""
    gap = prototype_labels[None, :].to(weights.dtype) - targets.to(weights.dtype)[:, None]  # (N, P)
    return (weights * gap.square()).sum(dim=1).mean()


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


def occurrence_share_loss(occurrence_maps: Tensor, background: Tensor, eps: float = 1e-6) -> Tensor:
    """The share of each map's mass outside the (dilated) LV, sum(B * M) / sum(M) over (t, h, w)
    (remedy, off in the paper): unlike `occurrence_loss` it does not fall when a map shrinks
    everywhere, an escape the cosine similarity leaves open (s_k ignores the scale of f_k).
    Same shapes and reduction as `occurrence_loss`: mean over samples, sum over prototypes."""
    background = background.expand_as(occurrence_maps)                                 # (N, P, T, H, W)
    outside = (background * occurrence_maps).sum(dim=(-3, -2, -1))                    # (N, P)
    total = occurrence_maps.sum(dim=(-3, -2, -1)).clamp_min(eps)                       # (N, P)
    return (outside / total).mean(dim=0).sum()


def concentration_loss(occurrence_maps: Tensor, fraction: float = 0.125, eps: float = 1e-6) -> Tensor:
    """The share of each map's mass per time slot outside its max(1, round(fraction·H'·W'))
    highest cells, 1 − top mass / total mass (remedy of issue 17, off in the paper): the
    deletion test hides exactly these cells, and a run's deletion ratio followed how much of
    its maps' mass they hold (docs/method.md §7), so a peaked map is asked for directly. Unlike
    an entropy it does not care how the top cells share their mass. occurrence_maps
    (N, P, T, H, W) -> (): mean over samples and slots, sum over prototypes (as `occurrence_loss`)."""
    flat = occurrence_maps.flatten(-2)                                      # (N, P, T, H*W)
    count = max(1, round(fraction * flat.shape[-1]))
    top = flat.topk(count, dim=-1).values.sum(dim=-1)                       # (N, P, T)
    outside = 1.0 - top / flat.sum(dim=-1).clamp_min(eps)                   # (N, P, T)
    return outside.mean(dim=(0, 2)).sum()


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


class WeightedLoss(nn.Module):
    """The loss protocol the batch loop (`protoef.training.loops.train_epoch`) relies on, the
    same for every model: ``terms(output, targets, model, background=, video=)`` gives every
    term unweighted and attached; `combine` gives sum_t w_t * term_t over `weights`; calling
    the loss gives (total, {term name: detached value} to log). ``diagnosable``: whether the
    per-term gradient norms of `protoef.diagnostics.loss_gradient_norms` apply (a prototype
    model's terms); ``logged``: whether the terms are logged beside the total."""

    weights: dict[str, float]
    diagnosable = False
    logged = True

    def terms(self, output, targets: Tensor, model: nn.Module, *, background: Tensor | None = None,
              video: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def combine(self, terms: dict[str, Tensor], reference: Tensor) -> Tensor:
        """sum_t w_t * term_t over the non-zero weights (a weight-0 term's inf/NaN cannot leak in)."""
        total = sum(self.weights[name] * value for name, value in terms.items() if self.weights[name] != 0)
        return total if isinstance(total, Tensor) else reference.sum() * 0.0  # every weight 0

    def forward(self, output, targets: Tensor, model: nn.Module, *, background: Tensor | None = None,
                video: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        terms = self.terms(output, targets, model, background=background, video=video)
        logged = {name: value.detach() for name, value in terms.items()} if self.logged else {}
        return self.combine(terms, output.ef), logged


class MSELoss(WeightedLoss):
    """The MSE alone: the black box's loss. Its one term is the total, so only the total is logged."""
    logged = False

    def __init__(self) -> None:
        super().__init__()
        self.weights = {"mse": 1.0}

    def terms(self, output, targets: Tensor, model: nn.Module, *, background: Tensor | None = None,
              video: Tensor | None = None) -> dict[str, Tensor]:
        return {"mse": mse_loss(output.ef, targets)}


class ProtoEFLoss(WeightedLoss):
    """Weighted sum of the terms; returns (total, {term name: unweighted value, detached}).

    The four cheap terms (mse, cluster, psd, pas) are always computed and logged, so an
    ablation with a weight of 0 still shows how that term behaves; occurrence needs the
    background mask; the optional terms (the remedies among them) are computed only when
    their weight is non-zero. `terms` gives the undetached values (gradient diagnostics).
    """
    diagnosable = True
    TERM_ORDER = ("mse", "cluster", "psd", "pas", "occurrence", "orthogonality", "theta_l1", "separation", "soft_label",
                  "expected_label_error", "reverse_soft_label", "transformation", "concentration")

    def __init__(self, *, mse: float = 0.1, cluster: float = 10.0, psd: float = 30.0,
                 pas: float = 0.1, occurrence: float = 1e-4, orthogonality: float = 0.0,
                 transformation: float = 0.0, theta_l1: float = 0.0, separation: float = 0.0,
                 soft_label: float = 0.0, delta: float = 5.0, cluster_k: int = 3, occurrence_p: float = 2,
                 soft_label_sigma: float = 5.0, psd_label_aware: bool = False,
                 expected_label_error: float = 0.0, reverse_soft_label: float = 0.0,
                 occurrence_share: bool = False, concentration: float = 0.0,
                 concentration_fraction: float = 0.125) -> None:
        super().__init__()
        self.weights = {"mse": mse, "cluster": cluster, "psd": psd, "pas": pas,
                        "occurrence": occurrence, "orthogonality": orthogonality,
                        "transformation": transformation, "theta_l1": theta_l1,
                        "separation": separation, "soft_label": soft_label,
                        "expected_label_error": expected_label_error, "reverse_soft_label": reverse_soft_label,
                        "concentration": concentration}
        self.delta, self.cluster_k, self.occurrence_p = delta, cluster_k, occurrence_p
        self.soft_label_sigma, self.psd_label_aware = soft_label_sigma, psd_label_aware
        self.occurrence_share = occurrence_share  # the "occurrence" term as `occurrence_share_loss`
        self.concentration_fraction = concentration_fraction

    def terms(self, output: ProtoEFOutput, targets: Tensor, model: nn.Module, *,
              background: Tensor | None = None, video: Tensor | None = None) -> dict[str, Tensor]:
        """Every term to compute, unweighted and still attached to the graph."""
        w = self.weights
        labels = model.prototype_labels
        psd_window = (targets, labels, self.delta) if self.psd_label_aware else ()
        terms = self.head_terms(output.ef, output.weights, targets, model) | {
            "cluster": cluster_loss(output.similarities, targets, labels, self.delta, self.cluster_k),
            "psd": psd_loss(output.similarities, *psd_window),
            "pas": pas_loss(model.prototypes, labels, self.delta),
        }
        if background is not None:
            terms["occurrence"] = (occurrence_share_loss(output.occurrence_maps, background) if self.occurrence_share
                                   else occurrence_loss(output.occurrence_maps, background, self.occurrence_p))
        elif w["occurrence"] != 0:
            raise ValueError("the occurrence loss has a non-zero weight: pass background=")
        if w["orthogonality"] != 0:
            terms["orthogonality"] = orthogonality_loss(model.prototypes)
        if w["separation"] != 0:
            terms["separation"] = separation_loss(output.similarities, targets, labels, self.delta)
        if w["transformation"] != 0:
            if video is None:
                raise ValueError("the transformation loss has a non-zero weight: pass video=")
            terms["transformation"] = transformation_loss(video, output.occurrence_maps, model.occurrence)
        if w["concentration"] != 0:
            terms["concentration"] = concentration_loss(output.occurrence_maps, self.concentration_fraction)
        return {name: terms[name] for name in self.TERM_ORDER if name in terms}  # the logged columns' order

    def head_terms(self, ef: Tensor, weights: Tensor, targets: Tensor, model: nn.Module) -> dict[str, Tensor]:
        """The terms that depend on θ given the similarities: the MSE, the θ penalty and the
        β terms (the remedies among them when their weight is non-zero). What a head refitted
        after the push minimises (`protoef.training.calibration.refit_head`): the other terms
        are constant in θ. ef (N,), weights β (N, P), targets (N,)."""
        w, labels = self.weights, model.prototype_labels
        terms = {"mse": mse_loss(ef, targets)}
        if w["theta_l1"] != 0:
            terms["theta_l1"] = theta_l1_loss(model.theta)
        if w["soft_label"] != 0:
            terms["soft_label"] = soft_label_loss(weights, targets, labels, self.soft_label_sigma)
        if w["expected_label_error"] != 0:
            terms["expected_label_error"] = expected_label_error_loss(weights, targets, labels)
        if w["reverse_soft_label"] != 0:
            terms["reverse_soft_label"] = reverse_soft_label_loss(weights, targets, labels, self.soft_label_sigma)
        return terms


__all__ = [
    "MSELoss", "ProtoEFLoss", "WeightedLoss", "cluster_loss", "concentration_loss", "expected_label_error_loss", "mse_loss", "occurrence_loss", "occurrence_share_loss",
    "orthogonality_loss",
    "pas_loss", "psd_loss", "random_affine", "reverse_soft_label_loss", "separation_loss", "soft_label_log_target",
    "soft_label_loss", "soft_label_target",
    "theta_l1_loss", "transformation_loss",
]
