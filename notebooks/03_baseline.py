# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · ProtoEFNet vs its black-box counterpart
#
# The paper claims ProtoEFNet is *on par* with the non-interpretable R(2+1)D regressor. Both models are trained with the same profile, budget, initialisation (the same warm-started backbone in the demo) and seeds; per seed, the table gives each test metric, the difference ProtoEFNet − black box and its paired bootstrap 95 % CI (both models on the same resampled videos); over seeds, the mean MAE ratio with a t interval.

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
bootstrap_samples = 1000

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"
import pandas as pd

seeds = studies.plan_for(profile).seeds
protoefnet = studies.seed_runs(profile, "protoefnet", seeds, data=data)
blackbox = studies.blackbox_runs(profile, seeds, data=data)
table = pd.concat([tables.run_table(protoefnet).assign(model="ProtoEFNet"),
                   tables.run_table(blackbox).assign(model="black box")])
table.to_csv(folder / "03_runs.csv", index=False)

# %% [markdown]
# ## Over seeds: test metrics (mean ± std) and the paired difference (t interval over seeds)

# %%
tables.format_mean_std(tables.mean_std(table, "model", ["mae", "rmse", "r2", "f1_40", "mae_ratio_trivial"]), digits=3)

# %%
pd.DataFrame([tables.paired_seed_difference(table, metric, arm="model", a="ProtoEFNet", b="black box")
              for metric in ("mae", "rmse", "r2")]).round(3)

# %% [markdown]
# ## Per seed: paired bootstrap on the test videos

# %%
comparison = pd.concat({seed: tables.compare_models(notebook.read_run(protoefnet[seed])["predictions"],
                                                   notebook.read_run(blackbox[seed])["predictions"], n=bootstrap_samples)
                        for seed in seeds}, names=["seed"])
comparison.to_csv(folder / "03_comparison.csv")
comparison.round(3)

# %% [markdown]
# A CI for the difference that contains 0 is consistent with "on par" on this test set; the paper's EchoNet-Dynamic numbers are MAE ≈ 4.07 (ProtoEFNet) vs 4.05 (black box, all clips).

# %%
figure = figures.prediction_scatter(notebook.read_run(blackbox[seeds[0]])["predictions"], title="black box, test (first seed)")
save_figure(figure, folder / "03_blackbox_scatter.png")
figure

# %% [markdown]
# ## Claim check
# The ratio is paired by seed (both models share the seed's initial backbone and data order).

# %%
claims.record(profile, "03", claims.on_par_claims(table))
