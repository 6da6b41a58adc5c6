"""Notebook 07, the occurrence-loss ablation: where each arm's maps look, whether they are
faithful to the model, and the claims that decide (docs/method.md §6).

- `localization_tables`: IoU, LV mass share and pointing game of every (arm, seed) run's
  occurrence maps on TEST, and of the black box's Grad-CAM at the block with the same
  spatial size (`localization.matching_gradcam_layer`) and at layer4;
- `deletion_results`, `randomization_results`: the deletion and model-randomisation tests
  (`protoef.analysis.faithfulness`) on the first TEST clips of one run per arm (the figure);
- `shown_deletion_results`: the deletion test of the maps a reader is shown (each clip's
  top-β prototypes) in every (arm, seed) run, which the deletion claims read;
- `occurrence_claims`: claims (a)–(e) of issue 17, each an effect size with an interval.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..analysis import faithfulness
from ..analysis.explain import model_input, take_clip
from ..analysis.localization import (covering_clip_start, gradcam, gradcam_iou_table, matching_gradcam_layer,
                                     occurrence_iou_table)
from ..config import from_dict
from ..diagnostics import SHOWN_PROTOTYPES
from ..training import build
from ..training.runs import RunDir
from . import intervals, tables
from .claims import Claim, verdict

__all__ = ["BLACKBOX_ARM", "STANDARD_GRADCAM_LAYER", "RANDOMIZED_TOP_LAYERS", "DELETION_FACTOR", "DELETION_FILLS",
           "arm_name", "traced_clips", "localization_tables", "per_video_means", "lv_area_fraction", "deletion_results",
           "shown_deletion_results", "randomization_results", "occurrence_claims"]

BLACKBOX_ARM = "black box"
STANDARD_GRADCAM_LAYER = "layer4"  # the black box's last block, the usual Grad-CAM choice
# The randomisation claim reads the cascade step with this many top layers re-initialised:
# for ProtoEFNet occurrence module, feature module and the last backbone stage (layer3, or
# layer2 where the backbone ends there); for the black box fc, layer4 and layer3.
RANDOMIZED_TOP_LAYERS = 3
DELETION_FACTOR = 3.0  # issue 17: a map's top cells must matter at least 3x as much as random cells
# What the deletion claims put in the hidden pixels: the mean gray (the constant of the first
# claims) and the harmonic inpainting of their surroundings (`faithfulness.inpaint`), which
# draws no edge that the clip lacks (docs/method.md §6, "Which fill").
DELETION_FILLS = {"gray": 0.0, "inpainted": "inpaint"}


def arm_name(weight: float) -> str:
    return f"occurrence loss {weight:g}"


def traced_clips(dataset, count: int) -> tuple[list[str], torch.Tensor]:
    """(filenames, model inputs (N, 3, T, H, W)) of the first `count` videos of a data set
    with masks: per video the clip the IoU tables use (covering ED and ES, else ED)."""
    names, clips = [], []
    for index in range(min(count, len(dataset))):
        video, masks = dataset.frames(index), dataset.masks(index)
        options = dict(clip_length=dataset.clip_length, period=dataset.period)
        try:
            start = covering_clip_start(len(video), [masks["ed_frame"], masks["es_frame"]], **options)
        except ValueError:  # ED and ES further apart than a clip: the ED clip
            start = covering_clip_start(len(video), [masks["ed_frame"]], **options)
        names.append(dataset.filenames[index])
        clips.append(model_input(take_clip(video, start, dataset.clip_length, dataset.period), dataset))
    return names, torch.stack(clips)


def _test_set(run):
    model, config, _ = build.load_run(run)
    return model, config, build.evaluation_dataset(config, with_masks=True)


def localization_tables(arm_runs: dict, blackbox_runs: dict) -> tuple[pd.DataFrame, str]:
    """(table, matching layer): the IoU-table rows of every ``{(weight, seed): run}`` (arm
    `arm_name(weight)`) and of every ``{seed: black-box run}`` (arm `BLACKBOX_ARM`, Grad-CAM
    at the matching layer and layer4), with columns arm, weight (NaN for the black box), seed."""
    parts, map_size = [], None
    for (weight, seed), run in arm_runs.items():
        model, config, test = _test_set(run)
        if map_size is None:
            _, clips = traced_clips(test, 1)
            map_size = tuple(model.occurrence(clips).shape[-2:])
        parts.append(occurrence_iou_table(model, test, progress=False).assign(arm=arm_name(weight), weight=weight,
                                                                              seed=seed))
    layer = None
    for seed, run in blackbox_runs.items():
        blackbox, _, test = _test_set(run)
        layer = layer or matching_gradcam_layer(blackbox, map_size, traced_clips(test, 1)[1])
        for name in dict.fromkeys((layer, STANDARD_GRADCAM_LAYER)):
            parts.append(gradcam_iou_table(blackbox, test, layer=name, progress=False).assign(
                arm=BLACKBOX_ARM, weight=np.nan, seed=seed))
    return pd.concat(parts, ignore_index=True), layer


def per_video_means(table: pd.DataFrame) -> pd.DataFrame:
    """The IoU table averaged over prototypes: one row per arm, method, seed, video and frame
    (what notebook 07 stores; `tables.localization_summary` gives the same ratios on it)."""
    keys = ["arm", "method", "seed", "filename", "frame"]
    return table.groupby(keys)[["lv_fraction", "iou", "lv_mass_share", "pointing_hit"]].mean().reset_index()


def lv_area_fraction(run, videos: int | None = None) -> float:
    """The share of the frame the traced LV covers: the mean of the ED and ES masks' areas
    over the first `videos` (default all) VAL videos of `run`'s data. The deletion test hides
    this share of each map's cells: the size of what a map that finds the LV points at. A
    property of the data, not of any model; VAL, so that TEST decides nothing about the test."""
    config = from_dict(RunDir(run).read_config())  # the data is all it needs: no checkpoint loaded
    val = build.evaluation_dataset(config, "VAL", with_masks=True)
    areas = []
    for index in range(min(videos or len(val), len(val))):
        masks = val.masks(index)
        areas += [float(masks["ed_mask"].mean()), float(masks["es_mask"].mean())]
    return float(np.mean(areas))


def _deletion_on_traced_clips(run, videos: int, fractions, *, every_prototype: bool, fills=None,
                              **options) -> pd.DataFrame:
    """`faithfulness.deletion_table` on the first `videos` TEST clips (`traced_clips`) of `run`,
    once per share of cells hidden in `fractions` (and, with `fills` ``{name: fill}``, once per
    fill, column fill = the name), of every prototype or of each clip's top-`SHOWN_PROTOTYPES`
    by β; columns fraction and filename added. The run and its clips are loaded once."""
    model, _, test = _test_set(run)
    names, clips = traced_clips(test, videos)
    prototypes = range(model.num_prototypes) if every_prototype else None
    variants = [({}, {})] if fills is None else [({"fill": fill}, {"fill": name}) for name, fill in fills.items()]
    parts = []
    for fraction in fractions:
        for fill_option, fill_column in variants:
            table = faithfulness.deletion_table(model, clips, prototypes, top_beta=SHOWN_PROTOTYPES, fraction=fraction,
                                                **fill_option, **options)
            parts.append(table.assign(fraction=fraction, filename=[names[i] for i in table["clip"]], **fill_column))
    return pd.concat(parts, ignore_index=True)


def deletion_results(runs: dict, videos: int, fractions=(faithfulness.DELETION_FRACTION,), **options) -> pd.DataFrame:
    """`faithfulness.deletion_table` of every prototype on the first `videos` TEST clips
    (`traced_clips`) of each ``{arm: run}``, once per share of cells hidden in `fractions`;
    columns arm, fraction and filename added. Notebook 07's figure hides the LV's own share
    (`lv_area_fraction`) and the default quarter beside it: at 8 × 8 a quarter of the
    cells is about twice the LV, so random quarters hit the LV too (docs/method.md §6)."""
    return pd.concat([_deletion_on_traced_clips(run, videos, fractions, every_prototype=True, **options).assign(arm=arm)
                      for arm, run in runs.items()], ignore_index=True)


def shown_deletion_results(arm_runs: dict, videos: int, fraction: float, fills=DELETION_FILLS, **options) -> pd.DataFrame:
    """`faithfulness.deletion_table` of each clip's top-`SHOWN_PROTOTYPES` prototypes by β (the
    maps an explanation shows) on the first `videos` TEST clips of every ``{(weight, seed): run}``,
    hiding `fraction` of the cells, once per ``{name: fill}`` of `fills` (default: gray and
    inpainted, `DELETION_FILLS`); columns arm (`arm_name`), weight, seed, fill (the name),
    fraction and filename added. The deletion claims are decided over seeds and clips from this
    table (a two-stage bootstrap, like the IoU claims): one seed's clips say nothing about how a
    verdict varies with training."""
    table = pd.concat([_deletion_on_traced_clips(run, videos, (fraction,), every_prototype=False, fills=fills, **options)
                       .assign(arm=arm_name(weight), weight=weight, seed=seed)
                       for (weight, seed), run in arm_runs.items()], ignore_index=True)
    # Fill-major rows (every run's gray rows, then every run's inpainted ones), the order the claims list.
    order = {name: position for position, name in enumerate(fills)}
    return table.sort_values("fill", key=lambda names: names.map(order), kind="stable").reset_index(drop=True)


def randomization_results(protoefnet_run, blackbox_run, layer: str, videos: int) -> pd.DataFrame:
    """Cascading `faithfulness.model_randomization_test` on the first `videos` TEST clips,
    all clips through each randomised copy at once: ProtoEFNet's occurrence maps (maps
    "occurrence", one per clip and prototype) and the black box's Grad-CAM at `layer` (maps
    "gradcam <layer>", one per clip); columns maps and filename added."""
    model, _, test = _test_set(protoefnet_run)
    names, clips = traced_clips(test, videos)
    blackbox, _, _ = build.load_run(blackbox_run)

    def occurrence_maps(tested, batch):  # (N·P, T', H', W'), clip-major
        with torch.no_grad():
            return tested.eval().occurrence(batch).flatten(0, 1).float().numpy()

    def gradcam_maps(tested, batch):  # (N, T', H', W')
        return gradcam(tested, batch, layer=layer).float().numpy()

    parts = []
    for kind, tested, map_fn, per_clip in (
            ("occurrence", model, occurrence_maps, model.num_prototypes),
            (f"gradcam {layer}", blackbox, gradcam_maps, 1)):
        table = faithfulness.model_randomization_test(tested, clips, map_fn=map_fn)
        parts.append(table.assign(maps=kind, filename=[names[index // per_clip] for index in table["map"]]))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- claims
def _above_chance_grid(iou: pd.DataFrame, arm: str, method: str) -> pd.DataFrame:
    rows = iou[(iou["arm"] == arm) & (iou["method"] == method)]
    return intervals.per_video_grid({seed: tables.iou_above_chance(part) for seed, part in rows.groupby("seed")})


def _claim(text: str, measure: str, result: dict, digits: int = 3, **threshold) -> Claim:
    values = result["value"], result["low"], result["high"]
    return Claim(text, measure, *values, verdict(*values, **threshold), digits=digits)


def _bootstrapped(seeds: int, videos: int) -> str:
    return f"{seeds} seed(s) × {videos} TEST videos, two-stage bootstrap"


def occurrence_claims(iou: pd.DataFrame, runs_table: pd.DataFrame, deletion: pd.DataFrame,
                      randomization: pd.DataFrame, *, chosen: float, layer: str, deletion_fraction: float) -> list[Claim]:
    """Issue 17's claims (a)–(e) for the profile's weight `chosen` against weight 0, and the
    black box's Grad-CAM at `layer` (the matching resolution). `runs_table`: `tables.run_table`
    keyed ("occurrence_weight", "seed"); `iou`: `localization_tables`' table; the deletion
    claims read `deletion`'s rows at `deletion_fraction` (one claim per fill and arm; columns of
    `shown_deletion_results`, a ``seed`` column included, ``fill`` "gray" where absent; of each
    seed's clips the top-3 β rows)."""
    mine, zero = _above_chance_grid(iou, arm_name(chosen), "occurrence"), _above_chance_grid(iou, arm_name(0.0), "occurrence")
    cam = _above_chance_grid(iou, BLACKBOX_ARM, f"gradcam {layer}")
    gain = intervals.bootstrap_interval({"a": mine, "b": zero}, intervals.mean_contrast({"a": 1, "b": -1}))
    lead = intervals.bootstrap_interval({"a": mine, "b": cam}, intervals.mean_contrast({"a": 1, "b": -1}))
    mae = tables.paired_seed_difference(runs_table, "mae", arm="occurrence_weight", a=chosen, b=0.0)
    claims = [
        _claim(f"The occurrence loss (weight {chosen:g}) makes the maps find the LV: IoU − chance at least 0.02 "
               "above weight 0", f"difference of IoU − chance, paired by seed and video, "
               f"{_bootstrapped(gain['seeds'], gain['videos'])}", gain, above=0.02),
        _claim(f"Its occurrence maps localise the LV better than the black box's Grad-CAM at the same resolution "
               f"({layer}): IoU − chance at least 0.02 higher", f"difference of IoU − chance, paired by seed and video, "
               f"{_bootstrapped(lead['seeds'], lead['videos'])}", lead, above=0.02),
        Claim(f"At no accuracy cost: TEST MAE with the occurrence loss ({chosen:g}) − without < +0.3 EF points",
              f"MAE difference, paired by seed, t interval over {mae['pairs']} seed(s)", mae["difference"], mae["low"],
              mae["high"], verdict(mae["difference"], mae["low"], mae["high"], below=0.3))]
    if "fill" not in deletion:
        deletion = deletion.assign(fill="gray")
    for (fill, arm), rows in deletion[np.isclose(deletion["fraction"], deletion_fraction)].groupby(["fill", "arm"],
                                                                                                  sort=False):
        shown = {seed: faithfulness.shown_prototype_rows(part) for seed, part in rows.groupby("seed")}
        drops = {kind: intervals.per_video_grid({seed: part.groupby("filename")[f"drop_{kind}"].mean()
                                                 for seed, part in shown.items()})
                 for kind in ("top", "random")}
        # "top drop ≥ 3 × random drop" as the linear contrast top − 3·random > 0: the same claim
        # wherever the ratio is defined, with a valid bootstrap interval also when the random
        # drop is near 0 or negative (occluding random cells can raise s_k), where the ratio of
        # means is unbounded or changes sign. The ratio itself is given in the measure's text.
        excess = intervals.bootstrap_interval(drops, intervals.mean_contrast({"top": 1, "random": -DELETION_FACTOR}))
        ratio = float(np.nanmean(drops["top"].to_numpy()) / np.nanmean(drops["random"].to_numpy()))
        cells = int(rows["cells"].iloc[0])
        claims.append(_claim(f"{arm}: the maps a reader is shown are faithful: hiding the top {cells} cells per time slot "
                             f"(the LV's share of the frame, {deletion_fraction:.0%}; pixels {fill}) of each clip's "
                             f"top-{SHOWN_PROTOTYPES} β prototypes drops their similarity ≥ {DELETION_FACTOR:g} × as much as hiding random "
                             f"cells (top drop − {DELETION_FACTOR:g} × random drop > 0)",
                             f"mean drop of s_k, top − {DELETION_FACTOR:g} × random (ratio of the means {ratio:.2f}), "
                             f"each clip's top-{SHOWN_PROTOTYPES} β prototypes, {excess['seeds']} seed(s) × {excess['videos']} "
                             "TEST clips, two-stage bootstrap", excess, digits=3, above=0.0))
    step = randomization[randomization["step"] == RANDOMIZED_TOP_LAYERS - 1]
    for kind, rows in step.groupby("maps", sort=False):
        rho = intervals.bootstrap_interval({"maps": intervals.per_video_grid({0: rows.groupby("filename")["spearman"].mean()})},
                                           intervals.mean_contrast({"maps": 1}))
        claims.append(_claim(f"Sanity (Adebayo et al.): {kind} maps depend on the learned weights: Spearman ρ with the "
                             f"trained maps < 0.5 once the top {RANDOMIZED_TOP_LAYERS} layers are re-initialised",
                             f"mean ρ ({rows['randomized'].iloc[0]} randomised), seed 0, {rho['videos']} TEST clips "
                             "(bootstrap over clips; constant maps skipped)", rho, below=0.5))
    return claims
