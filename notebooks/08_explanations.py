# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Explanations: the prototypes, and why a video gets its EF
#
# The paper's qualitative figures for the ProtoEFNet run of notebook 02. Global: the prototype gallery — after the push every prototype is a real training clip; shown at the frame of its strongest occurrence, sorted by EF label. Local: for test videos of low, median and high true EF, the prototypes with the largest weight β, each with its occurrence map on the input clip (left) next to its own source clip and map (right). The explained clip is the video's first clip; the test prediction averages several clips.

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
run = None  # path of an existing ProtoEFNet run, or None for runs/<profile>-protoefnet-seed0
examples = {"low": 0.0, "mid": 0.5, "high": 1.0}  # test videos by quantile of the true EF
top = 3  # prototypes per explanation

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"
from IPython.display import display

from protoef.analysis import explain
from protoef.training import build

run = notebook.ensure_run(profile, "protoefnet-seed0", data=data, path=run)
model, config, _ = build.load_run(run)
test = build.evaluation_dataset(config)
picks = tables.pick_by_quantile(test.efs, examples)
print(run.name, {name: f"{test.filenames[i]} (EF {test.efs[i]:.1f})" for name, i in picks.items()})

# %% [markdown]
# ## Prototype gallery
# Drawn from the run's prototype artefacts (`prototypes/prototype_XX.npz` and the source clips) into `prototypes/`: `gallery.png`, plus a strip and a GIF per prototype (also `python -m protoef gallery RUN`).

# %%
gallery = explain.save_prototype_gallery(run, explain.push_dataset(run, data=data))[-1]  # prototypes/gallery.png
figure = figures.image_figure(gallery)
save_figure(figure, folder / "08_gallery.png")
figure

# %% [markdown]
# ## Local explanations: low, mid and high true EF
# Per video: its clip with the occurrence maps of its top prototypes (left), each beside the prototype's own source clip and map (right).

# %%
for name, index in picks.items():
    figure = explain.plot_local_explanation(explain.explain_video(model, test, index, top=top), run, source=build.data_root(config))
    save_figure(figure, folder / f"08_local_{name}.png")
    display(figure)

# %% [markdown]
# ## Claim check
# Over the profile's seeds (notebook 02's runs): the explanation is worth reading only if its top prototype's label is near the answer. The share is a mean of per-video hits, so its interval comes from a two-stage bootstrap over seeds and TEST videos and stays inside [0, 1].

# %%
seed_table = tables.run_table(studies.seed_runs(profile, "protoefnet", studies.plan_for(profile).seeds, data=data))
claims.record(profile, "08", claims.explanation_claims(seed_table))
