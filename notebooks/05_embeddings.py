# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Does the embedding keep the EF order?
#
# t-SNE and UMAP of the pooled test-video features together with the prototype vectors, coloured by EF, for the ProtoEFNet run of notebook 02. A video is drawn by the pooled feature f_k of its highest-β prototype k — the very vector the model compared with p_k. The quantitative companion: the Spearman rank correlation between the label distance |l_j − l_k| and the angle between p_j and p_k over all prototype pairs (near 1: the prototype space is ordered by EF; near 0: unrelated).

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
run = None  # path of an existing ProtoEFNet run, or None for runs/<profile>-protoefnet-seed0
methods = ["tsne", "umap"]

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"
from protoef.analysis import embeddings
from protoef.training import build

run = notebook.ensure_run(profile, "protoefnet-seed0", data=data, path=run)
model, config, _ = build.load_run(run)
pooled = embeddings.pooled_features(model, build.make_loader(build.evaluation_dataset(config), config))
print(f"{run.name}: {len(pooled.efs)} test videos, {model.num_prototypes} prototypes")

# %% [markdown]
# ## t-SNE and UMAP
# Stars are prototypes (coloured by their EF label), dots are test videos (coloured by true EF). Neighbourhoods are meaningful; global distances in these maps are not.

# %%
figure = figures.embedding_figure(pooled, model.prototypes, model.prototype_labels, methods)
save_figure(figure, folder / "05_embeddings.png")
figure

# %% [markdown]
# ## Label distance vs prototype angle

# %%
rho = embeddings.label_angle_rank_correlation(model.prototypes, model.prototype_labels)
print(f"Spearman rank correlation (label distance, angle): {rho:.3f}")
figure = figures.label_gap_angle_figure(*tables.prototype_vectors(run), title="ProtoEFNet prototypes")
save_figure(figure, folder / "05_label_gap_vs_angle.png")
figure

# %% [markdown]
# ## Claim check
# Over the profile's seeds (notebook 02's runs, reused).

# %%
seed_table = tables.run_table(studies.seed_runs(profile, "protoefnet", studies.plan_for(profile).seeds, data=data))
claims.record(profile, "05", claims.order_claims(seed_table))
