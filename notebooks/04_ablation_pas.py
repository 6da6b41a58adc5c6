# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Does the PAS loss do anything?
#
# The paper's contribution is the Prototype Angular Separation loss: prototypes whose EF labels differ by more than Δl are pushed apart in angle. Claims tested here: PAS keeps (or improves) accuracy and F1, and spreads the prototypes by label. Three questions, each answered from the runs' own records:
#
# 1. **Ablation**: with PAS (the profile's weight) and without (`loss.pas = 0`), everything else equal, over the plan's `pas_seeds` (paired by seed: same initial weights and data order).
# 2. **Does PAS move the prototypes?** The far-pair angle (mean angle between prototypes whose labels differ by more than Δl) after training and the push, against its value at initialisation, and PAS's share of the gradient on the prototype vectors during training.
# 3. **Does its weight matter?** A sweep of `loss.pas` over `pas_weights` with the working recipe (`pas_sweep_seeds` for the weights other than 0 and the profile's own).
#
# **Budget** (`studies.plan_for(profile)`: the profile owns it). Demo: the profile's own budget, so the with-PAS arm is notebook 02's runs (reused); 5 seeds per arm, weights 0 and 0.1 only (the time budget of the whole demo on 2 cores). Smoke (CI): one seed, one epoch, 8 videos, which only shows that the pipeline runs. Paper: every run at the paper's budget, weights 0, 0.1, 1 and 10, 5 seeds per arm, 3 for the other weights.

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
executor = "auto"  # how the runs launch: "auto" (one process per GPU if several, else in turn), "sequential", "gpus", or {"kind": "slurm", ...} (protoef/companion/executors.py)

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"
import pandas as pd

plan = studies.plan_for(profile)
runs = studies.pas_weight_runs(profile, plan.pas_weights, plan.pas_seeds, plan.pas_overrides, data=data,
                               sweep_seeds=plan.pas_sweep_seeds, executor=executor)
table = tables.run_table(runs, keys=("pas_weight", "seed"))
table["angle_moved"] = table["far_pair_angle"] - table["far_pair_angle_initial"]
table.to_csv(folder / "04_pas_runs.csv", index=False)
print(f"{len(runs)} runs: {plan}")

# %% [markdown]
# ## Test after the push, per PAS weight (mean ± std over seeds; `n` runs)
# `angle_moved`: far-pair angle after training and the push minus at initialisation (degrees); `pas_gradient_share`: PAS's share of the summed loss-gradient norms on the prototypes.

# %%
columns = ["mae", "f1_40", "sparsity", "top1_label_within_10", "far_pair_angle", "far_pair_angle_initial", "angle_moved", "pas_gradient_share"]
tables.format_mean_std(tables.mean_std(table, "pas_weight", columns), digits=3)

# %% [markdown]
# ## The ablation: with − without PAS, paired by seed (mean difference, 95 % t interval over seeds)

# %%
default = notebook.config_for(profile).loss.pas
pd.DataFrame([tables.paired_seed_difference(table, metric, arm="pas_weight", a=default, b=0.0)
              for metric in ("mae", "f1_40", "sparsity", "far_pair_angle")]).round(3)

# %% [markdown]
# ## Prototype-angle matrices (first seed)
# Angle between every pair of prototype vectors of the final (pushed) model, rows and columns ordered by EF label, for each PAS weight. PAS should brighten (widen) the angles away from the diagonal band |Δl| ≤ Δl.

# %%
arms = {f"loss.pas = {weight:g}": tables.prototype_vectors(runs[(weight, plan.pas_seeds[0])]) for weight in plan.pas_weights}
figure = figures.angle_matrix_figure(arms, delta=notebook.config_for(profile).loss.delta)
save_figure(figure, folder / "04_angle_matrices.png")
figure

# %% [markdown]
# ## Claim check
# With − without PAS, paired by seed; the interval is a 95 % t interval over the seeds. Thresholds are effect sizes: an MAE gain of at least 0.1 EF point, a far-pair angle gain of more than 2°.

# %%
claims.record(profile, "04", claims.pas_claims(table, default))
