# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Train ProtoEFNet
#
# Trains ProtoEFNet with the chosen profile over the profile's seeds (`studies.plan_for(profile).seeds`) (or reuses finished runs): the headline test metrics after the push (the post-push model is the headline one: its prototypes are real training clips) with the interpretability diagnostics, as mean ± std over seeds; then, for the first seed, the learning curves, metrics before and after the push, the gradient each loss term puts on the prototypes, predicted vs true EF and a Bland–Altman plot.

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
run = None  # path of an existing run directory to show instead of training runs/<profile>-protoefnet-seed<s>
overrides = {}  # config overrides, e.g. {"model.tau": 0.5}

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"

seeds = studies.plan_for(profile).seeds
runs = {"given": run} if run else studies.seed_runs(profile, "protoefnet", seeds, overrides, data=data)
table = tables.run_table(runs).assign(model="ProtoEFNet")
table.to_csv(folder / "02_runs.csv", index=False)
results = notebook.read_run(next(iter(runs.values())))
print(f"{len(runs)} run(s), seeds {list(runs)}")

# %% [markdown]
# ## Test after the push, mean ± std over seeds
# MAE in EF points; `mae_ratio_trivial` divides by the MAE of always predicting the training-mean EF; `top1_label_within_10` is the share of test videos whose top-β prototype has a label within ±10 EF points of the truth (does the explanation point at the answer?); `sparsity` counts the prototypes that carry 80 % of β.

# %%
summary = tables.mean_std(table, "model", ["r2", "f1_40", *tables.DIAGNOSTIC_COLUMNS])
tables.format_mean_std(summary, digits=3).T

# %% [markdown]
# ## First seed: learning curves, metrics before and after the push, loss gradients

# %%
figure = figures.learning_curves(results["history"])
save_figure(figure, folder / "02_learning_curves.png")
figure

# %%
tables.metrics_table(results["metrics"]).round(3)

# %%
figure = figures.gradient_figure({"ProtoEFNet, first seed": results["history"]})
save_figure(figure, folder / "02_gradients.png")
figure

# %%
figure = figures.prediction_scatter(results["predictions"], title="ProtoEFNet (after push), test")
save_figure(figure, folder / "02_scatter.png")
figure

# %%
figure = figures.bland_altman(results["predictions"], title="ProtoEFNet (after push), test")
save_figure(figure, folder / "02_bland_altman.png")
figure

# %% [markdown]
# ## Claim check
# Intervals are 95 % t intervals over the seeds (the replicates). Thresholds are effect sizes: at most half the training-mean MAE, a push costing less than +0.3 EF points.

# %%
claims.record(profile, "02", claims.accuracy_claims(table))
