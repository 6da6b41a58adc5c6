"""Screen recipe variants on VAL (never TEST): the record behind docs/method.md §7.

    python tools/screen.py OUT_DIR --seeds 0 1 2 --arm base --arm frozen3:model.frozen_stages=3 \
        --arm frozen3-e8:model.frozen_stages=3,optim.epochs=8

Each arm is ``NAME[:KEY=VALUE,KEY=VALUE...]`` on top of the demo profile (``--profile``);
every (arm, seed) is trained once into ``OUT_DIR/<arm>-seed<seed>`` (a finished run is
reused) by `protoef.training.lifecycle.fit`, one after the other. Then one row per run is
printed and written to ``OUT_DIR/screen.csv``: the VAL numbers after the push from the run's
metrics.json (MAE, β mass within ±10 EF, label spread under β, prototypes for 80 % of β,
top-1 label within ±10), the occurrence maps' IoU ÷ chance at ED / ES on VAL
(`tables.localization_summary`), the deletion test on the first `--deletion-videos` VAL clips,
every prototype, as notebook 07 decides it (mean top drop − 3 × mean random drop, > 0 where
faithful) and as the ratio of the two means (docs/method.md §6: the ratio changes sign when
random occlusion raises the similarity); the same test as notebook 07's claim reads it (each
clip's top-3 β prototypes, as many cells as the LV covers on VAL; ``shown_deletion_*``; with
the hidden pixels inpainted instead of gray, ``shown_inpaint_deletion_*``) and the
share of those maps' mass in the cells it hides (``shown_concentration``); and the wall clock of
the run's training steps and of the whole run (timings.json). Paired differences against
the first arm, per seed, close the table.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import pandas as pd
import torch

from protoef import losses
from protoef.analysis import faithfulness
from protoef.analysis.localization import occurrence_iou_table
from protoef.companion import occurrence_study, tables
from protoef.config import resolve
from protoef.diagnostics import SHOWN_PROTOTYPES
from protoef.training import build, lifecycle, runs

VAL_KEYS = {"val_mae": "mae", "beta_mass_within_10": "beta_mass_within_10", "beta_label_spread": "beta_label_spread",
            "sparsity": "sparsity", "top1_label_within_10": "top1_label_within_10"}


def parse_arm(text: str) -> tuple[str, list[str]]:
    """``NAME[:KEY=VALUE,...]`` → (name, ["KEY=VALUE", ...]): the CLI's --set form, which
    `config.resolve` parses and checks."""
    name, _, settings = text.partition(":")
    return name, [item for item in settings.split(",") if item]


def deletion_summary(table: pd.DataFrame, prefix: str) -> dict:
    """Notebook 07's reading of a deletion table: mean top drop − 3 × mean random drop (> 0
    where faithful) and the ratio of the two means."""
    top, random = table["drop_top"].mean(), table["drop_random"].mean()
    return {f"{prefix}_contrast": float(top - occurrence_study.DELETION_FACTOR * random),
            f"{prefix}_ratio": float(top / random)}


def screen_row(run_dir: pathlib.Path, deletion_videos: int) -> dict:
    run = runs.RunDir(run_dir)
    val = run.read_metrics()["val"]["post_push"]
    row = {column: val[key] for column, key in VAL_KEYS.items()}
    model, config, _ = build.load_run(run_dir)
    val_set = build.evaluation_dataset(config, "VAL", with_masks=True)
    summary = tables.localization_summary(occurrence_iou_table(model, val_set, progress=False).assign(arm="x"))
    for frame in ("ED", "ES"):
        row[f"iou_over_chance_{frame}"] = float(summary.loc[("x", "occurrence", frame), "iou_over_chance"])
    _, clips = occurrence_study.traced_clips(val_set, deletion_videos)
    row.update(deletion_summary(faithfulness.deletion_table(model, clips, range(model.num_prototypes)), "deletion"))
    lv_share = occurrence_study.lv_area_fraction(run_dir)
    shown = faithfulness.deletion_table(model, clips, top_beta=SHOWN_PROTOTYPES, fraction=lv_share)
    row.update(deletion_summary(shown, "shown_deletion"))
    row.update(deletion_summary(faithfulness.deletion_table(model, clips, top_beta=SHOWN_PROTOTYPES, fraction=lv_share,
                                                            fill="inpaint"), "shown_inpaint_deletion"))
    with torch.no_grad():
        maps = torch.cat([model(clips[i:i + 8]).occurrence_maps.float() for i in range(0, len(clips), 8)])
    shown_maps = maps[shown["clip"].to_numpy(), shown["prototype"].to_numpy()][:, None]  # (rows, 1, T', H', W')
    # the loss is the mean mass share outside the top cells (one "prototype" per row here)
    row["shown_concentration"] = 1.0 - float(losses.concentration_loss(shown_maps, lv_share))
    timings = run.read_timings()
    row["train_steps_s"] = timings["seconds"]["epochs_train"]
    row["run_s"] = timings["total_seconds"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arm", action="append", required=True, help="NAME[:KEY=VALUE,...]; the first is the reference")
    parser.add_argument("--deletion-videos", type=int, default=24)
    args = parser.parse_args(argv)
    arms = [parse_arm(text) for text in args.arm]
    rows = []
    for seed in args.seeds:  # every arm at a seed before the next seed: a cut screen stays paired
        for name, overrides in arms:
            run_dir, config = args.out / f"{name}-seed{seed}", resolve(args.profile, [*overrides, f"seed={seed}"])
            run = runs.RunDir(run_dir)
            if run.finished:  # reused only if it is this arm's run
                run.require_config(config.to_dict(), checkpoint="final", remedy="Name the arm differently or delete the run.")
            else:
                lifecycle.fit(config, run_dir)
            stored = args.out / f"{name}-seed{seed}.row.json"  # each run's row is computed once
            if not stored.is_file() or "shown_inpaint_deletion_ratio" not in json.loads(stored.read_text()):  # or rows before it
                stored.write_text(json.dumps(screen_row(run_dir, args.deletion_videos)))
            rows.append({"arm": name, "seed": seed, **json.loads(stored.read_text())})
            print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "screen.csv", index=False)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False, float_format="%.3f"))
    reference = table[table["arm"] == arms[0][0]].set_index("seed")
    numeric = table.columns.drop(["arm", "seed"])
    for name, _ in arms[1:]:
        difference = table[table["arm"] == name].set_index("seed")[numeric] - reference[numeric]
        print(f"\n{name} − {arms[0][0]}, per seed:\n{difference.to_string(float_format='%.3f')}\n"
              f"mean:\n{difference.mean().to_string(float_format='%.3f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
