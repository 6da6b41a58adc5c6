"""The multi-run studies of the notebooks, and their budgets per profile.

A study is a set of named runs, each trained or reused through `notebook.ensure_run` (a
reused run whose stored config differs from the requested one is an error naming the
keys, so a study never mixes runs of different budgets silently):

- `seed_runs`: one recipe over seeds (notebooks 02, 03); `blackbox_runs`, the black box's (03, 07);
- `pas_weight_runs`: the PAS ablation and weight sweep (04);
- `occurrence_weight_runs`: the occurrence-loss ablation (07);
- `sensitivity_runs`: the τ × Δl grid (06);
- `recipe_runs`: the paper's recipe beside this project's (09).

Budgets belong to the profile: `plan_for(profile)` is the one place that says how many
seeds, which grid and how many epochs each study gets, so ``./run_all.sh --profile paper``
runs the paper's budget and the smoke profile (CI) a seconds-long one.
"""
from __future__ import annotations

import dataclasses

from ..config import PAPER_RECIPE, REMEDIES, Config
from ..training.runs import RunDir
from . import notebook

__all__ = ["StudyPlan", "STUDY_PLANS", "PAPER_OCCURRENCE_WEIGHT", "BLACKBOX", "plan_for", "occurrence_weights_for",
           "blackbox_runs", "seed_runs",
           "run_sweep", "pas_weight_runs", "occurrence_weight_runs", "sensitivity_runs", "recipes_for", "own_recipe",
           "recipe_runs"]

PAPER_OCCURRENCE_WEIGHT = Config().loss.occurrence  # the paper's loss.occurrence (its config is the paper's)


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """How much each study of a profile runs. Overrides go on top of the profile's config."""
    seeds: tuple = (0, 1, 2)  # seeds of notebooks 02, 03, 05's ρ and 08's claim
    recipe_seeds: tuple = (0, 1, 2)  # seeds of notebook 09's two recipes
    pas_weights: tuple = (0.0, 0.1, 1.0, 10.0)  # loss.pas values of notebook 04
    pas_seeds: tuple = (0, 1, 2, 3, 4)  # seeds of the ablation arms (0 and the profile's own weight)
    pas_sweep_seeds: tuple = (0,)  # seeds of the other weights
    pas_overrides: dict = dataclasses.field(default_factory=dict)  # {}: the profile's budget, 02's runs reused
    taus: tuple = (0.1, 0.2, 0.5)  # model.tau grid of notebook 06
    deltas: tuple = (2.5, 5.0, 10.0)  # loss.delta grid of notebook 06
    sensitivity_overrides: dict = dataclasses.field(default_factory=dict)
    # loss.occurrence values of notebook 07; None: 0, the paper's weight and the profile's own
    # (`occurrence_weights_for`), so the profile's arm is notebook 02's runs.
    occurrence_weights: tuple | None = None
    occurrence_seeds: tuple = (0, 1, 2)  # seeds of the compared occurrence arms (0 and the profile's own weight)
    # seeds of the paper's weight when it is not the profile's own (None: occurrence_seeds): no
    # claim compares it with another arm over seeds (its deletion row uses the first seed)
    occurrence_paper_seeds: tuple | None = None
    occurrence_overrides: dict = dataclasses.field(default_factory=dict)  # {}: the profile's budget


STUDY_PLANS = {
    # 5 seeds per model, per PAS arm (0 and the paper's 0.1, whose runs are notebook 02's) and
    # per compared occurrence arm (0 and the demo's 1), so that an effect of a tenth of an EF
    # point can be told from seed noise; per recipe of notebook 09 too, whose β-locality claims
    # sit near their thresholds (with 3 seeds, t₀.₉₇₅ = 4.30 left the spread claim undecided;
    # this project's arm is notebook 02's runs, so only the paper recipe's 2 runs are added);
    # 3 for the paper's occurrence weight (described, not compared), and a 2 × 2 grid at a
    # third of the budget (4 of 12 epochs, from the warm start): what fits the demo's time on 2
    # cores (the paper plan keeps the weight sweep and the full grid).
    "demo": StudyPlan(seeds=(0, 1, 2, 3, 4), recipe_seeds=(0, 1, 2, 3, 4), pas_weights=(0.0, 0.1),
                      pas_seeds=(0, 1, 2, 3, 4), taus=(0.1, 0.5), deltas=(2.5, 10.0),
                      sensitivity_overrides={"optim.epochs": 4}, occurrence_seeds=(0, 1, 2, 3, 4),
                      occurrence_paper_seeds=(0, 1, 2)),
    # One seed and one-epoch sweeps on 8 videos: shows in CI that every study runs, nothing more.
    "smoke": StudyPlan(seeds=(0,), recipe_seeds=(0,), pas_weights=(0.0, 0.1), pas_seeds=(0,), pas_sweep_seeds=(0,),
                       pas_overrides={"optim.epochs": 1, "data.limit_videos": 8}, taus=(0.2, 0.5), deltas=(5.0,),
                       sensitivity_overrides={"optim.epochs": 1, "data.limit_videos": 8}, occurrence_seeds=(0,),
                       occurrence_overrides={"optim.epochs": 1, "data.limit_videos": 8}),
    # The paper's budget for every run (30 epochs); a wider grid.
    "paper": StudyPlan(pas_sweep_seeds=(0, 1, 2), taus=(0.1, 0.2, 0.5, 1.0), deltas=(1.0, 2.5, 5.0, 7.5, 10.0)),
}


def plan_for(profile: str) -> StudyPlan:
    if profile not in STUDY_PLANS:
        raise KeyError(f"no study plan for profile {profile!r}; choose one of {sorted(STUDY_PLANS)}")
    return STUDY_PLANS[profile]


def occurrence_weights_for(profile: str) -> tuple:
    """The ``loss.occurrence`` arms of notebook 07: the plan's, or else 0 (no occurrence
    loss), the paper's weight and the profile's own, in that order, without repeats."""
    planned = plan_for(profile).occurrence_weights
    if planned is not None:
        return tuple(planned)
    own = notebook.config_for(profile).loss.occurrence
    return tuple(dict.fromkeys((0.0, PAPER_OCCURRENCE_WEIGHT, own)))


# The black box of notebooks 03 and 07 trains every stage of its backbone, whatever the
# profile freezes for ProtoEFNet: frozen like ProtoEFNet's (stem and layer1) it lost 0.59 /
# 0.62 EF points of VAL MAE on seeds 0 / 1 (docs/method.md §7), and a comparison must be
# made against the stronger baseline, not the one that flatters the interpretable model.
BLACKBOX = {"model.kind": "blackbox", "model.frozen_stages": 0}


def blackbox_runs(profile: str, seeds, *, data: str | None = None) -> dict:
    """``{seed: run directory}`` of the black box (`BLACKBOX`) over seeds: one set of runs,
    shared by notebooks 03 (accuracy) and 07 (Grad-CAM)."""
    return seed_runs(profile, "blackbox", seeds, BLACKBOX, data=data)


def seed_runs(profile: str, name: str, seeds, overrides: dict | None = None, *, data: str | None = None) -> dict:
    """``{seed: run directory}`` of ``<name>-seed<seed>`` for each seed (`notebook.ensure_run`):
    the same recipe repeated over seeds, for means and intervals instead of single runs."""
    return {seed: notebook.ensure_run(profile, f"{name}-seed{seed}", {**(overrides or {}), "seed": seed}, data=data)
            for seed in seeds}


def run_sweep(profile: str, planned: dict, *, data=None, executor="auto") -> dict:
    """``{key: (run name, overrides)}`` → ``{key: run directory}``: the runs not finished yet
    are trained by `executors.run_jobs` with `executor` ("auto": one process per GPU when
    several are visible, else one after the other here), then each is checked with
    `notebook.ensure_run`. A finished run with other settings is refused before anything trains."""
    from . import executors

    todo = []
    for name, values in planned.values():
        if RunDir(notebook.run_dir(profile, name)).finished:
            notebook.ensure_run(profile, name, values, data=data)  # reused: check it now
        else:
            todo.append(executors.Job(profile, name, values, data=data))
    if todo and executors.resolve_executor(executor)["kind"] != "sequential":
        executors.run_jobs(todo, executor)
    return {key: notebook.ensure_run(profile, name, values, data=data) for key, (name, values) in planned.items()}


def pas_weight_runs(profile: str, weights, seeds, overrides: dict, *, data=None, sweep_seeds=None,
                    executor="auto") -> dict:
    """ProtoEFNet per PAS weight (``loss.pas``) and seed: ``{(weight, seed): run directory}``.

    The profile's own weight with no overrides is notebook 02's run (``protoefnet-seed{s}``),
    reused; other weights are ``pas{w}-seed{s}``. `sweep_seeds` (default: `seeds`) are the
    seeds of the weights other than 0 and the profile's own (the ablation arms get all)."""
    default = notebook.config_for(profile).loss.pas
    planned = {}
    for weight in weights:
        arm_seeds = seeds if weight in (0.0, default) else (sweep_seeds or seeds)
        name = "protoefnet" if weight == default and not overrides else f"pas{weight:g}"
        for seed in arm_seeds:
            planned[(weight, seed)] = (f"{name}-seed{seed}", {**overrides, "loss.pas": float(weight), "seed": seed})
    return run_sweep(profile, planned, data=data, executor=executor)


def occurrence_weight_runs(profile: str, weights, seeds, overrides: dict, *, data=None, paper_seeds=None,
                           executor="auto") -> dict:
    """ProtoEFNet per occurrence-loss weight (``loss.occurrence``) and seed: ``{(weight, seed):
    run directory}``. The profile's own weight with no overrides is notebook 02's run
    (``protoefnet-seed{s}``), reused; other weights are ``occ{w}-seed{s}``. The paper's weight
    is run in the paper's form too (``loss.occurrence_share`` off), whatever the profile's form,
    over `paper_seeds` (default: `seeds`) when it is not the profile's own weight."""
    own = notebook.config_for(profile).loss.occurrence
    planned = {}
    for weight in weights:
        name = "protoefnet" if weight == own and not overrides else f"occ{weight:g}"
        paper_arm = weight == PAPER_OCCURRENCE_WEIGHT and weight != own
        form = {"loss.occurrence_share": False} if paper_arm else {}
        for seed in (paper_seeds or seeds) if paper_arm else seeds:
            planned[(weight, seed)] = (f"{name}-seed{seed}", {**overrides, "loss.occurrence": float(weight), **form,
                                                              "seed": seed})
    return run_sweep(profile, planned, data=data, executor=executor)


def sensitivity_runs(profile: str, taus, deltas, overrides: dict, *, data=None, executor="auto") -> dict:
    """One run per (τ, Δl) (``model.tau``, ``loss.delta``), named ``tau{τ}-delta{Δl}``.
    Returns ``{(tau, delta): run directory}``."""
    return run_sweep(profile, {(tau, delta): (f"tau{tau:g}-delta{delta:g}",
                                              {**overrides, "model.tau": float(tau), "loss.delta": float(delta)})
                               for tau in taus for delta in deltas}, data=data, executor=executor)


def recipes_for(profile: str) -> dict:
    """recipe name -> (run-name prefix, overrides on top of the profile). The demo and smoke
    profiles carry this project's recipe, so the paper's is the override; the paper profile
    carries the paper's, so the remedies are."""
    if profile == "paper":
        return {"paper recipe": ("protoefnet", {}), "with the remedies": ("remedies", REMEDIES)}
    return {"this project": ("protoefnet", {}), "paper recipe": ("paper-recipe", PAPER_RECIPE)}


def own_recipe(profile: str) -> str:
    """The name, in `recipes_for`, of the recipe the profile itself carries (notebook 02's runs)."""
    return next(recipe for recipe, (_, extra) in recipes_for(profile).items() if not extra)


def recipe_runs(profile: str, seeds, overrides: dict | None = None, *, data=None) -> dict:
    """``{(recipe, seed): run directory}`` (`seed_runs` per recipe); the profile's own
    recipe is notebook 02's runs, so they are reused, not trained again."""
    return {(recipe, seed): run
            for recipe, (prefix, extra) in recipes_for(profile).items()
            for seed, run in seed_runs(profile, prefix, seeds, {**(overrides or {}), **extra}, data=data).items()}
