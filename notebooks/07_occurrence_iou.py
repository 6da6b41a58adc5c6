# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · The occurrence loss: do the maps look at the left ventricle, and are they faithful?
#
# An ablation of the occurrence loss (`loss.occurrence`, which asks each prototype's occurrence map to stay off the background around the traced LV): ProtoEFNet trained with weight 0, the paper's 1e-4 and the profile's own weight (`studies.occurrence_weights_for`; the profile's own arm is notebook 02's runs), over the plan's `occurrence_seeds`, everything else equal. For every arm and seed, on TEST after the push (docs/method.md §6):
#
# - **localisation** against the traced LV at ED and ES: IoU (top-q rule, chance q / (2 − q)), the share of the map's mass inside the LV (chance: the LV fraction q) and the pointing game (map maximum inside the LV; chance q), each as a ratio to chance; the black box of notebook 03 is measured the same way on its Grad-CAM at the block whose maps have the size of ProtoEFNet's (`localization.matching_gradcam_layer`) and at `layer4`, the standard choice;
# - **faithfulness**: hiding a prototype's top cells against random cells (deletion test), and the model-randomisation sanity test of Adebayo et al. (cascading from the top), for the occurrence maps and for Grad-CAM alike.
#
# **Budget** (`studies.plan_for(profile)`). Demo: 5 seeds for weight 0 and the profile's own weight (the compared arms), 3 for the paper's weight (described, and tested for deletion); the profile's own arm reuses notebook 02's runs. Smoke (CI): one seed, one epoch, 8 videos per arm. Paper: 3 seeds per arm at the paper's budget.

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
executor = "auto"  # how the runs launch: "auto" (one process per GPU if several, else in turn), "sequential", "gpus", or {"kind": "slurm", ...} (protoef/companion/executors.py)
examples = {"low EF": 0.0, "median EF": 0.5, "high EF": 1.0}  # test videos by EF quantile
faithfulness_videos = 24  # TEST clips of the figure's deletion and randomisation tests (seed 0 of each arm, every prototype)
deletion_claim_videos = 48  # TEST clips per run of the deletion claims (every seed of each arm, the shown maps)

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, occurrence_study, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"
from protoef.training import build

plan = studies.plan_for(profile)
weights, chosen = studies.occurrence_weights_for(profile), notebook.config_for(profile).loss.occurrence
runs = studies.occurrence_weight_runs(profile, weights, plan.occurrence_seeds, plan.occurrence_overrides, data=data,
                                      paper_seeds=plan.occurrence_paper_seeds, executor=executor)
blackbox_runs = studies.blackbox_runs(profile, plan.seeds, data=data)
runs_table = tables.run_table(runs, keys=("occurrence_weight", "seed"))
iou, layer = occurrence_study.localization_tables(runs, blackbox_runs)
occurrence_study.per_video_means(iou).to_csv(folder / "07_iou.csv", index=False)
print(f"weights {weights} (the profile's: {chosen:g}); seeds {sorted({seed for _, seed in runs})}; black box seeds "
      f"{list(plan.seeds)}, Grad-CAM at {layer} (the occurrence maps' size) and {occurrence_study.STANDARD_GRADCAM_LAYER}")

# %% [markdown]
# ## Localisation per arm and method, as multiples of chance (mean over seeds)
# 1 = chance. `iou_over_chance`: mean IoU ÷ mean q / (2 − q); `mass_over_fraction`: mean share of the map's mass inside the LV ÷ mean LV fraction q; `pointing_over_fraction`: share of maps whose maximum lies in the LV ÷ q.

# %%
summary = tables.localization_summary(iou)
summary.round(3)

# %%
figure = figures.localization_by_arm_figure(summary)
save_figure(figure, folder / "07_iou_by_arm.png")
figure

# %% [markdown]
# ## Accuracy per arm (TEST after the push, mean ± std over seeds)

# %%
tables.format_mean_std(tables.mean_std(runs_table, "occurrence_weight", ["mae", "f1_40", "sparsity", "top1_label_within_10"]), digits=3)

# %% [markdown]
# ## Per prototype: the profile's weight, first seed (sorted by EF label)
# Do some prototypes localise the LV and others not?

# %%
first = runs[(chosen, plan.occurrence_seeds[0])]
mine = iou[(iou["arm"] == occurrence_study.arm_name(chosen)) & (iou["seed"] == plan.occurrence_seeds[0])]
tables.iou_per_prototype(mine, tables.prototype_vectors(first)[1]).round(3)

# %% [markdown]
# ## Examples across the EF range
# The ED frame with the traced LV (white outline), the occurrence map of the video's highest-β prototype (the profile's weight, first seed), and the black box's Grad-CAM at each layer.

# %%
model, config, _ = build.load_run(first)
blackbox, _, _ = build.load_run(blackbox_runs[plan.seeds[0]])
test = build.evaluation_dataset(config, with_masks=True)
picks = tables.pick_by_quantile(test.efs, examples)
figure = figures.localization_examples(model, blackbox, test, list(picks.values()),
                                       gradcam_layers=[layer, occurrence_study.STANDARD_GRADCAM_LAYER])
save_figure(figure, folder / "07_examples.png")
figure

# %% [markdown]
# ## Faithfulness and sanity (the figure: seed 0 of each arm, the first `faithfulness_videos` TEST clips)
# Left: deletion test, every prototype: the similarity drop when the map's top cells per time slot are hidden, ÷ the drop for as many random cells (target ≥ 3), for as many cells as the LV covers on VAL (the claim) and for a quarter of the cells (at 8 × 8 about twice the LV, so random quarters hit the LV too). Right: cascading parameter randomisation from the top, for the occurrence maps and for the black box's Grad-CAM at the same resolution (layer4's 2 × 2 maps at 32 pixels are too coarse for a rank correlation); a map that keeps ρ near 1 after its layers are re-initialised does not show what the model learned.

# %%
seed0 = plan.occurrence_seeds[0]
lv_share = occurrence_study.lv_area_fraction(runs[(chosen, seed0)])  # mean traced LV area ÷ frame, VAL
deletion = occurrence_study.deletion_results({occurrence_study.arm_name(w): runs[(w, seed0)] for w in weights},
                                             faithfulness_videos, fractions=(lv_share, 0.25))
randomization = occurrence_study.randomization_results(runs[(chosen, seed0)], blackbox_runs[plan.seeds[0]], layer,
                                                       faithfulness_videos)
figure = figures.faithfulness_figure(deletion, randomization)
save_figure(figure, folder / "07_faithfulness.png")
figure

# %% [markdown]
# The deletion claims are decided on the maps a reader is shown (each clip's top-3 β prototypes), at the LV's share of the cells, over every seed of each arm and the first `deletion_claim_videos` TEST clips: one seed's clips cannot tell a verdict from the luck of one training run. Each is tested twice: the hidden pixels set to the mean gray, and inpainted from the pixels around them (`faithfulness.inpaint`), which hides a region without drawing a gray patch the model has never seen (docs/method.md §6).

# %%
shown_deletion = occurrence_study.shown_deletion_results(runs, deletion_claim_videos, lv_share)
shown_deletion.groupby(["fill", "arm", "seed"], sort=False)[["drop_top", "drop_random"]].mean()  # mean drops per run

# %% [markdown]
# ## Claim check
# Each threshold is an effect size stated in the claim. IoU differences: two-stage bootstrap over seeds and TEST videos (the same resampled seeds and videos for both arms); the MAE difference: t interval over seeds, paired by seed; deletion: two-stage bootstrap over seeds and clips; randomisation: bootstrap over the clips of seed 0.

# %%
claims.record(profile, "07", occurrence_study.occurrence_claims(iou, runs_table, shown_deletion, randomization,
                                                                chosen=chosen, layer=layer, deletion_fraction=lv_share))
