# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Sensitivity to τ and Δl
#
# Open question: how much do the softmax temperature τ of the head (`model.tau`) and the label window Δl of the cluster/PAS losses and the push (`loss.delta`) matter? One ProtoEFNet run per grid point, everything else equal; heatmaps of the post-push test MAE, F1 (EF < 40), sparsity and diversity.
#
# **Budget** (`studies.plan_for(profile)`). Demo: τ ∈ {0.1, 0.5} × Δl ∈ {2.5, 10}, one seed, `optim.epochs = 4` (4 runs of a third of the demo budget, from the warm-started backbone, to fit the demo time budget); single-seed cells also differ by training noise, so read trends, not single cells. Paper: τ ∈ {0.1, 0.2, 0.5, 1.0} × Δl ∈ {1, 2.5, 5, 7.5, 10} at the paper's budget. Smoke (CI): two one-epoch runs.

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
executor = "auto"  # how the runs launch: "auto" (one process per GPU if several, else in turn), "sequential", "gpus", or {"kind": "slurm", ...} (protoef/companion/executors.py)

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"

plan = studies.plan_for(profile)
runs = studies.sensitivity_runs(profile, plan.taus, plan.deltas, plan.sensitivity_overrides, data=data, executor=executor)
table = tables.run_table(runs, keys=("tau", "delta"))
table.to_csv(folder / "06_sensitivity_runs.csv", index=False)
table[["tau", "delta"] + tables.HEADLINE].round(3)

# %% [markdown]
# ## Heatmaps over the grid
# Rows τ, columns Δl. MAE: lower is better; F1: higher is better; sparsity: lower means fewer prototypes carry each prediction; diversity: how many prototypes are used at all.

# %%
figure = figures.sweep_heatmaps(table, ["mae", "f1_40", "sparsity", "diversity"], rows="tau", columns="delta")
save_figure(figure, folder / "06_sensitivity_heatmaps.png")
figure

# %% [markdown]
# ## Claim check
# One seed per grid point: the range includes seed noise (notebook 02 gives the seed-to-seed spread). The interval resamples the TEST videos, the same resampled videos for every grid point.

# %%
claims.record(profile, "06", claims.sensitivity_claims(table))
