"""Are the explanations faithful and sane? Tests a reader can check, beyond the paper (issue 17).

- `deletion_test`: occlude the top-q cells of one prototype's occurrence map (nearest-upsampled
  to the frame, in every frame of their time slot) and measure the drop of that prototype's
  similarity s_k, against random cells of the same count per time slot. A faithful map drops
  s_k much more than random cells do. `deletion_table` runs it over clips and prototypes.
  The hidden pixels get a constant (``fill=0``, the mean gray) or, with ``fill="inpaint"``,
  the harmonic interpolation of the pixels around them (`inpaint`), which draws no new edge
  (docs/method.md §6).
- `randomized_copy`, `model_randomization_test`: the model-parameter randomisation test of
  Adebayo et al. (NeurIPS 2018): re-initialise layers (cascading from the top, each alone, or
  all at once) and compare the maps with the trained model's (`map_similarity`: Spearman
  rank correlation and SSIM). Maps that survive randomisation (correlation near 1) do not
  depend on what the model learned.
- `noise_stability`: under small Gaussian input noise, does the top-β prototype set stay,
  and does each of those prototypes' map keep its argmax (cf. Huang et al., ICCV 2023)?

Every function takes any model whose forward returns `protoef.model.ProtoEFOutput` (the
noise and deletion tests) or any map function (the randomisation test, so Grad-CAM of the
black box is tested the same way), and a clip in model-input space (normalised), shaped
(3, T, H, W). Models run in eval mode (restored afterwards) without gradients. Notebook 07
runs the deletion and randomisation tests (`protoef.companion.occurrence_study`);
docs/method.md §6 describes them.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor, nn

from ..diagnostics import SHOWN_PROTOTYPES
from ..model import eval_mode

__all__ = [
    "DELETION_FRACTION", "PROTOEFNET_LAYERS_TOP_DOWN", "BLACKBOX_LAYERS_TOP_DOWN", "layers_top_down", "occlusion_mask",
    "deletion_test", "deletion_table", "inpaint", "shown_prototype_rows", "randomized_copy", "occurrence_maps_of", "map_similarity",
    "model_randomization_test", "noise_stability",
]

# The randomisation order "from the top": the layers nearest the output first. The occurrence
# maps depend on the occurrence module and the backbone only (not on feature_module).
PROTOEFNET_LAYERS_TOP_DOWN = ("occurrence_module", "feature_module", "backbone.layer3", "backbone.layer2",
                              "backbone.layer1", "backbone.stem")
BLACKBOX_LAYERS_TOP_DOWN = ("network.fc", "network.layer4", "network.layer3", "network.layer2", "network.layer1",
                            "network.stem")


def layers_top_down(model: nn.Module) -> tuple[str, ...]:
    """The randomisation order of `model`: the names of PROTOEFNET_LAYERS_TOP_DOWN (or, for the
    black box, BLACKBOX_LAYERS_TOP_DOWN) it has; a backbone truncated after layer2
    (``model.feature_stage``) has no layer3."""
    names = BLACKBOX_LAYERS_TOP_DOWN if hasattr(model, "network") else PROTOEFNET_LAYERS_TOP_DOWN
    present = {name for name, _ in model.named_modules()}
    return tuple(name for name in names if name in present)


DELETION_FRACTION = 0.25  # the share of a map's cells per time slot the deletion test hides unless told


def _forward(model: nn.Module, video: Tensor):
    with eval_mode(model), torch.no_grad():
        return model(video)


def occlusion_mask(cells: Tensor, frame_shape: tuple[int, int, int]) -> Tensor:
    """Nearest upsampling of a cell mask (T', H', W') bool to the clip (T, H, W): frame t lies in
    slot floor(t·T'/T), pixel (h, w) in cell (floor(h·H'/H), floor(w·W'/W))."""
    slots, rows, columns = cells.shape
    frames, height, width = frame_shape
    t = torch.arange(frames) * slots // frames
    h = torch.arange(height) * rows // height
    w = torch.arange(width) * columns // width
    return cells[t][:, h][:, :, w]  # (T, H, W)


def inpaint(video: Tensor, hidden: Tensor) -> Tensor:
    """`video` (C, T, H, W) with the pixels of `hidden` (T, H, W) bool replaced, frame by frame
    and channel by channel, by the harmonic interpolation of the visible pixels: each hidden
    pixel the mean of its 4 neighbours inside the frame (a discrete Laplace equation whose
    boundary values are the visible pixels next to the hole). A constant fill draws edges that
    no clip has (a gray square on the black sector border, a bright patch in the dark LV
    cavity) and measures the model's reaction to them; this fill is the smooth continuation of
    what surrounds the hole. It is the linear imputation of ROAD (Rong et al., ICML 2022) with
    4 neighbours and without its added noise. A frame with every pixel hidden keeps its values.
    Returns a new tensor; float64 arithmetic, cast back to the video's dtype."""
    out = video.detach().clone()
    channels, frames, height, width = video.shape
    masks = hidden.cpu().numpy().reshape(frames, -1)
    # Frames of one map time slot share their mask: one factorisation serves all of them.
    groups: dict[bytes, list[int]] = {}
    for t in range(frames):
        if masks[t].any() and not masks[t].all():
            groups.setdefault(masks[t].tobytes(), []).append(t)
    for times in groups.values():
        rows, columns = np.nonzero(masks[times[0]].reshape(height, width))
        index = -np.ones((height, width), dtype=np.int64)
        index[rows, columns] = np.arange(rows.size)
        pixels = video[:, times].detach().double().cpu().numpy().reshape(channels * len(times), -1)  # (C·F, H·W)
        diagonal = np.zeros(rows.size)
        right_side = np.zeros((rows.size, pixels.shape[0]))
        entries, positions = [], []
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            r, c = rows + dr, columns + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            diagonal += inside  # a neighbour outside the frame does not count (no flux across the border)
            neighbour = np.where(inside, index[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)], -1)
            unknown = inside & (neighbour >= 0)
            known = inside & (neighbour < 0)
            entries.append(np.flatnonzero(unknown))
            positions.append(neighbour[unknown])
            np.add.at(right_side, np.flatnonzero(known), pixels[:, r[known] * width + c[known]].T)
        row_ids = np.concatenate([np.arange(rows.size)] + entries)
        column_ids = np.concatenate([np.arange(rows.size)] + positions)
        values = np.concatenate([diagonal] + [-np.ones(e.size) for e in entries])
        system = scipy.sparse.csc_matrix((values, (row_ids, column_ids)), shape=(rows.size, rows.size))
        solution = scipy.sparse.linalg.splu(system).solve(right_side)                  # (hidden, C·F)
        filled = torch.from_numpy(solution.T.reshape(channels, len(times), rows.size)).to(out.dtype).to(out.device)
        for position, t in enumerate(times):
            out[:, t, rows, columns] = filled[:, position]
    return out


def _top_cells(occurrence_map: Tensor, count: int) -> Tensor:
    """Per time slot the `count` highest cells of a (T', H', W') map (ties: the lower index) → bool."""
    slots = occurrence_map.shape[0]
    flat = occurrence_map.reshape(slots, -1)                                          # (T', H'·W')
    order = torch.from_numpy(np.argsort(-flat.double().cpu().numpy(), axis=1, kind="stable")[:, :count])
    mask = torch.zeros(flat.shape, dtype=torch.bool).scatter_(1, order, True)
    return mask.reshape(occurrence_map.shape)


def _random_cells(shape: tuple[int, int, int], count: int, generator: torch.Generator) -> Tensor:
    slots, cells = shape[0], shape[1] * shape[2]
    mask = torch.zeros(slots, cells, dtype=torch.bool)
    for slot in range(slots):
        mask[slot, torch.randperm(cells, generator=generator)[:count]] = True
    return mask.reshape(shape)


def deletion_test(model: nn.Module, video: Tensor, prototype: int, **options) -> dict[str, float]:
    """Similarity drop of prototype `prototype` when its map's top cells are occluded vs random cells.

    video (3, T, H, W), model input. Per time slot of the map (T', H', W'), the
    max(1, round(fraction·H'·W')) highest cells are set to `fill` (0: the mean gray of the
    normalised input; "inpaint": `inpaint`, the hole's harmonic interpolation) in every frame
    of that slot; the random arm occludes as many uniformly drawn cells per slot, `repeats` times. Returns ``similarity`` (s_k of the clean clip),
    ``drop_top`` (s_k − s_k occluded), ``drop_random`` and ``drop_random_sd`` (mean and sd over
    the random draws), ``cells`` (the count per slot) and ``beta`` (the prototype's β on the
    clean clip). ``per_slot=False`` ranks the cells of the map's mean over time instead and
    occludes the same cells in every frame (and one random spatial draw for all slots).
    `generator` (default: seeded 0) draws the random cells; at most `batch_size` occluded
    clips go through the model at once. The options and their defaults (fraction
    `DELETION_FRACTION`, repeats 10, fill 0, per_slot True, generator None, batch_size 16) are
    `_deletion_rows`', the one place `deletion_table` also takes them from."""
    return _deletion_rows(model, video, [prototype], **options)[0]


def _deletion_rows(model, video, prototypes, *, fraction: float = DELETION_FRACTION, repeats: int = 10,
                   fill: float | str = 0.0,
                   per_slot: bool = True, generator: torch.Generator | None = None, batch_size: int = 16,
                   clean=None) -> list[dict]:
    """`deletion_test` for several prototypes of one clip at the cost of one. Which cells the
    random arm hides depends only on the map shape and the generator, not on the prototype, so
    one set of `repeats` randomly occluded clips serves every prototype (their s_k are all read
    from the same forward); only the top-cell occlusion is one clip per prototype. `clean`:
    the model's output on the clean clip when the caller has it already."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    clean = clean if clean is not None else _forward(model, video[None])
    maps = clean.occurrence_maps[0].float().cpu()                                    # (P, T', H', W')
    shape = tuple(maps.shape[1:])
    count = max(1, int(round(fraction * shape[1] * shape[2])))
    if per_slot:
        top = [_top_cells(maps[k], count) for k in prototypes]
        random = [_random_cells(shape, count, generator) for _ in range(repeats)]
    else:  # one spatial set for the whole clip, broadcast over the time slots
        spatial = (1, *shape[1:])
        top = [_top_cells(maps[k].mean(0, keepdim=True), count).expand(shape) for k in prototypes]
        random = [_random_cells(spatial, count, generator).expand(shape) for _ in range(repeats)]
    after = _occluded_similarities(model, video, top + random, fill=fill, batch_size=batch_size)  # (K + R, P)
    rows = []
    for index, k in enumerate(prototypes):
        similarity = float(clean.similarities[0, k])
        random_drops = similarity - after[len(prototypes):, k]
        rows.append({"similarity": similarity, "beta": float(clean.weights[0, k]),
                     "drop_top": similarity - float(after[index, k]),
                     "drop_random": float(random_drops.mean()) if repeats else math.nan,
                     "drop_random_sd": float(random_drops.std(ddof=1)) if repeats > 1 else math.nan, "cells": count})
    return rows


def _occluded_similarities(model, video: Tensor, cell_masks: list, *, fill: float | str, batch_size: int) -> np.ndarray:
    """s (len(cell_masks), P) of `video` with each cell mask's pixels set to `fill` (a number,
    or "inpaint": `inpaint`), in batches."""
    if isinstance(fill, str) and fill != "inpaint":
        raise ValueError(f"fill must be a number or 'inpaint', got {fill!r}")
    parts = []
    for first in range(0, len(cell_masks), batch_size):
        chunk = cell_masks[first:first + batch_size]
        occluded = video[None].repeat(len(chunk), 1, 1, 1, 1)                          # (B, 3, T, H, W)
        for index, cells in enumerate(chunk):
            hidden = occlusion_mask(cells, tuple(video.shape[1:])).to(video.device)
            if fill == "inpaint":
                occluded[index] = inpaint(video, hidden)
            else:
                occluded[index][:, hidden] = fill
        parts.append(_forward(model, occluded).similarities.float().cpu().numpy())
    return np.concatenate(parts)


def deletion_table(model: nn.Module, videos: Tensor, prototypes=None, *, top_beta: int = 1, **options) -> pd.DataFrame:
    """`deletion_test` for every clip of `videos` (N, 3, T, H, W) and every prototype in
    `prototypes` (default: each clip's `top_beta` prototypes by β, ties to the lower index, as
    `shown_prototype_rows` ranks them); one row per (clip, prototype), with
    ``ratio`` = drop_top / drop_random (NaN when the random drop is 0). Options are `deletion_test`'s;
    without a `generator`, each clip's random cells are drawn from a generator seeded 0, so every
    clip and prototype is tested against the same random draws."""
    rows = []
    for clip_index, video in enumerate(videos):
        chosen, clean = prototypes, None
        if chosen is None:  # the clean forward that ranks β is also the test's clean reference
            clean = _forward(model, video[None])
            chosen = np.argsort(-clean.weights[0].float().cpu().numpy(), kind="stable")[:top_beta]
        chosen = [int(k) for k in chosen]
        for prototype, result in zip(chosen, _deletion_rows(model, video, chosen, clean=clean, **options)):
            ratio = result["drop_top"] / result["drop_random"] if result["drop_random"] else math.nan
            rows.append({"clip": clip_index, "prototype": prototype, **result, "ratio": ratio})
    return pd.DataFrame(rows)


def shown_prototype_rows(deletion: pd.DataFrame) -> pd.DataFrame:
    """The rows of a `deletion_table` (one model and fraction) for each clip's top-`SHOWN_PROTOTYPES`
    prototypes by β (ties: the lower prototype index): the maps an explanation shows."""
    order = deletion.sort_values(["clip", "beta", "prototype"], ascending=[True, False, True], kind="stable")
    return order.groupby("clip", sort=False).head(SHOWN_PROTOTYPES).sort_index()


# --------------------------------------------------------------------------- parameter randomisation

def randomized_copy(model: nn.Module, layers, *, seed: int = 0) -> nn.Module:
    """A deep copy of `model` whose submodules named in `layers` (dotted names) are
    re-initialised by each layer's own ``reset_parameters`` (torch's default initialiser;
    BatchNorm also resets its running statistics), drawn from `seed`. The model is untouched."""
    randomized = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in layers:
            for module in randomized.get_submodule(name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return randomized


def occurrence_maps_of(model: nn.Module, video: Tensor) -> np.ndarray:
    """The default map function: every prototype's occurrence map of one clip, (P, T', H', W')."""
    return _forward(model, video[None]).occurrence_maps[0].float().cpu().numpy()


def _normalized(values: np.ndarray) -> np.ndarray:
    low, span = values.min(), np.ptp(values)
    return (values - low) / span if span > 0 else np.zeros_like(values)


def map_similarity(trained, other) -> tuple[float, float]:
    """(Spearman rank correlation, SSIM) of two maps of one shape, (T', H', W') or (H', W').

    Spearman over all cells (NaN if either map is constant). SSIM (scikit-image) of the maps
    each min-max scaled to [0, 1] (data range 1), per 2-D time slice, then averaged; window
    the largest odd size ≤ min(7, H', W'); NaN for maps smaller than 3 × 3."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a, b = np.asarray(trained, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    constant = np.ptp(a) == 0 or np.ptp(b) == 0
    rho = math.nan if constant else float(spearmanr(a.ravel(), b.ravel()).statistic)
    a, b = _normalized(a), _normalized(b)
    slices_a, slices_b = (a[None], b[None]) if a.ndim == 2 else (a, b)
    side = min(7, *slices_a.shape[1:])
    window = side if side % 2 else side - 1
    if window < 3:
        return rho, math.nan
    ssim = [structural_similarity(x, y, win_size=window, data_range=1.0) for x, y in zip(slices_a, slices_b)]
    return rho, float(np.mean(ssim))


def model_randomization_test(model: nn.Module, video: Tensor, *, layers=None,
                             map_fn=occurrence_maps_of, mode: str = "cascade", seed: int = 0) -> pd.DataFrame:
    """Maps of randomised copies of `model` against its own maps, one row per step and map.

    `map_fn(model, video)` → (K, ...) maps of the clip video (3, T, H, W); default the
    occurrence maps; for Grad-CAM pass e.g. ``lambda m, v: gradcam(m, v)[None].numpy()``
    (`protoef.analysis.localization.gradcam`). `mode`: "cascade" (step i re-initialises
    layers[:i + 1], from the top), "independent" (step i only layers[i]) or "all" (one step,
    every layer). Columns: step, layer (the layer added or randomised), randomized (every
    layer re-initialised, comma-separated), map, spearman, ssim. A passing sanity check
    shows correlations well below 1 once the layers the maps depend on are re-initialised.
    `layers` (dotted names, top first) default to `layers_top_down(model)`."""
    layers = list(layers_top_down(model) if layers is None else layers)
    if mode == "cascade":
        steps = [layers[: i + 1] for i in range(len(layers))]
    elif mode == "independent":
        steps = [[layer] for layer in layers]
    elif mode == "all":
        steps = [layers]
    else:
        raise ValueError(f"mode must be 'cascade', 'independent' or 'all', got {mode!r}")
    trained = np.asarray(map_fn(model, video))                                        # (K, ...)
    rows = []
    for step, randomized_layers in enumerate(steps):
        maps = np.asarray(map_fn(randomized_copy(model, randomized_layers, seed=seed), video))
        for index, (before, after) in enumerate(zip(trained, maps)):
            rho, ssim = map_similarity(before, after)
            rows.append({"step": step, "layer": randomized_layers[-1], "randomized": ",".join(randomized_layers),
                         "map": index, "spearman": rho, "ssim": ssim})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- input noise

def noise_stability(model: nn.Module, video: Tensor, *, noise_std: float = 0.05, repeats: int = 10, top: int = 3,
                    generator: torch.Generator | None = None) -> dict[str, float]:
    """Do the explanation's parts stay put when i.i.d. Gaussian noise N(0, noise_std²) (in the
    normalised input's units) is added to the clip video (3, T, H, W)? Over `repeats` draws:

    - ``top_set_overlap``: |top-`top` β set of the noisy clip ∩ the clean one| / top;
    - ``top1_unchanged``: share of draws with the same top-1 prototype;
    - ``argmax_unchanged``: share, over draws and the clean top prototypes, of maps whose
      argmax cell (t', h', w') is the clean map's (ties: the first cell);
    - ``argmax_shift_cells``: mean Euclidean distance of those argmax cells, in cells."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    clean = _forward(model, video[None])
    beta = clean.weights[0].float().cpu().numpy()                                      # (P,)
    top = min(top, len(beta))
    chosen = np.argsort(-beta, kind="stable")[:top]                                    # (top,)
    shape = tuple(clean.occurrence_maps.shape[2:])                                     # (T', H', W')

    def argmax_cells(maps: Tensor) -> np.ndarray:  # (top, T', H', W') → (top, 3)
        flat = maps.reshape(maps.shape[0], -1).float().cpu().numpy()
        return np.stack(np.unravel_index(flat.argmax(axis=1), shape), axis=1)

    clean_cells = argmax_cells(clean.occurrence_maps[0, chosen])
    noise = torch.randn((repeats, *video.shape), generator=generator).to(video.device, video.dtype)
    noisy = _forward(model, video[None] + noise_std * noise)
    overlap, same_top1, same_argmax, shift = [], [], [], []
    for index in range(repeats):
        noisy_beta = noisy.weights[index].float().cpu().numpy()
        noisy_top = np.argsort(-noisy_beta, kind="stable")[:top]
        overlap.append(len(set(chosen) & set(noisy_top)) / top)
        same_top1.append(noisy_top[0] == chosen[0])
        cells = argmax_cells(noisy.occurrence_maps[index, chosen])
        same_argmax += list((cells == clean_cells).all(axis=1))
        shift += list(np.linalg.norm(cells - clean_cells, axis=1))
    return {"top_set_overlap": float(np.mean(overlap)), "top1_unchanged": float(np.mean(same_top1)),
            "argmax_unchanged": float(np.mean(same_argmax)), "argmax_shift_cells": float(np.mean(shift))}
