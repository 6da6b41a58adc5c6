# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The data set at a glance
#
# What the model learns from: the EF distribution per split, echo frames with the traced LV at end-diastole (ED) and end-systole (ES), and a volume curve. Works on EchoNet-Dynamic (`profile = "paper"`, `data` = its folder) and on the embedded synthetic set (demo, smoke).

# %% tags=["parameters"]
profile = None  # "demo", "smoke" or "paper"; None: $PROTOEF_PROFILE or "demo"
data = None  # EchoNet-Dynamic root for the paper profile (or $ECHONET_DIR)
examples = 3  # videos shown with their tracings

# %%
from protoef.analysis.plots import save_figure
from protoef.companion import claims, figures, notebook, studies, tables

profile, folder = notebook.setup(profile)  # the parameter, else $PROTOEF_PROFILE, else "demo"
from protoef.data import EchoNet

root = notebook.dataset_root(profile, data=data)
train = EchoNet(root, "TRAIN", with_masks=True, mean=0.0, std=1.0)
print(f"{root.name}: {len(train)} training videos, {len(train.skipped)} skipped")

# %% [markdown]
# ## EF per split
# EchoNet-Dynamic: mean 55.7, sd 12.4, 22 % below 50. The dotted lines are the 40 % and 50 % thresholds of the F1 and AUROC metrics.

# %%
figure = figures.ef_histograms(root)
save_figure(figure, folder / "01_ef_histograms.png")
figure

# %% [markdown]
# ## Frames with the traced LV
# The yellow outline is the polygon rule of docs/method.md §5 applied to `VolumeTracings.csv`; ED is the traced frame with the larger area.

# %%
figure = figures.example_frames(train, list(range(min(examples, len(train)))))
save_figure(figure, folder / "01_example_frames.png")
figure

# %% [markdown]
# ## A volume curve
# The synthetic set stores the LV mask of every frame (`LVMasks/`), so its volume curve is known; EchoNet-Dynamic traces two frames per video, so this figure exists only for the synthetic data.

# %%
figure = figures.volume_curve(root, train.filenames[0])
if figure is not None:
    save_figure(figure, folder / "01_volume_curve.png")
figure

# %% [markdown]
# ## Claim check
# EchoNet-Dynamic's EF labels come from clinicians' tracings; the synthetic set computes them from its own. Either way the label should be the method-of-discs EF of the two traced frames (docs/method.md §5).

# %%
claims.record(profile, "01", claims.data_claims(root))
