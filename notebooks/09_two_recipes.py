# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · The paper's recipe and this project's, side by side
#
# Is a trained ProtoEFNet actually interpretable? Its prediction is a β-weighted mean of prototype labels, so the explanation ("the prototypes it leaned on") means something only if β is peaked on a few prototypes whose labels are near the answer. With the paper's losses nothing asks a clip to be *dissimilar* to prototypes of far-away EF: cluster rewards in-window similarity, PSD pulls every prototype towards its nearest clip whatever that clip's EF, and PAS acts on prototype pairs with a gradient too small to matter. Every similarity can drift towards 1, β flattens, and the model regresses by tilting a flat mixture.
#
# Both recipes here share the data, the backbone (with the same warm start, the demo's stand-in for Kinetics-400), the budget and the seeds; they differ only by `protoef.config.PAPER_RECIPE`: the paper's learning rates and loss weights, prototype labels on linspace(10, 90), no separation cost, no soft-label target on β, the paper's PSD. "This project" is the demo profile (notebook 02's runs, reused).
#
# Diagnostics (all from the runs' own `metrics.json` and `history.csv`, `protoef.diagnostics`): similarity gap (mean s within the label window minus outside), top-1 β and β entropy, sparsity (prototypes for 80 % of β), the top-1 prototype's label error (median, and the share within ±10 EF points), distinct training clips among the pushed prototypes, the PAS far-pair angle against its value at initialisation, and PAS's share of the gradient on the prototypes.

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
overrides = {}  # on top of both recipes; {} keeps the profile's budget (notebook 02's runs are reused)

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"

seeds = studies.plan_for(profile).recipe_seeds
runs = studies.recipe_runs(profile, seeds, overrides, data=data)
table = tables.run_table(runs, keys=("recipe", "seed"))
table.to_csv(folder / "09_recipes_runs.csv", index=False)
print(f"{len(runs)} runs, seeds {list(seeds)}")

# %% [markdown]
# ## The collapse in numbers (TEST, after the push; mean ± std over seeds)
# `mae_ratio_trivial`: MAE ÷ the MAE of always predicting the training-mean EF. `push_mae_change`: MAE after minus before the push.

# %%
summary = tables.mean_std(table, "recipe", tables.DIAGNOSTIC_COLUMNS)
tables.format_mean_std(summary, digits=3).T

# %% [markdown]
# ## Per EF range: error and how many prototypes serve it
# For each range of the true EF, the MAE and the number of distinct top-1 prototypes among its test videos (mean over seeds).

# %%
ranges = [f"{kind}_{group}" for group in ("lt40", "40_50", "ge50") for kind in ("n", "mae", "prototypes")]
table.groupby("recipe", sort=False)[ranges].mean().round(2).T

# %% [markdown]
# ## The collapse in a picture: β per test video
# Rows: test videos sorted by true EF; columns: prototypes sorted by EF label (first seed). Cyan dots mark, per video, the prototype whose label is nearest the truth: an explanation that points at the answer is bright along them.

# %%
first = {recipe: run for (recipe, seed), run in runs.items() if seed == seeds[0]}
figure = figures.attention_figure(first)
save_figure(figure, folder / "09_attention.png")
figure

# %% [markdown]
# ## Which loss term drives the prototypes?
# Gradient norm of each weighted loss term on the prototype vectors, measured on the first batches of every epoch (first seed).

# %%
figure = figures.gradient_figure({recipe: notebook.read_run(run)["history"] for recipe, run in first.items()})
save_figure(figure, folder / "09_gradients.png")
figure

# %% [markdown]
# ## Claim check
# The β-locality targets of an explanation worth reading (issue 17), per recipe: ≥ 90 % of β's mass on prototypes within ±10 EF points of the truth (two-stage bootstrap over seeds and TEST videos), a β-weighted label spread ≤ 5 EF points and ≤ 8 prototypes for 80 % of β (t intervals over seeds). The top-1 label share within ±10 EF is notebook 08's claim for the profile's own recipe; it is reported here for the other recipe only.

# %%
claims.record(profile, "09", claims.recipe_claims(table, shared_with_08=studies.own_recipe(profile)))
