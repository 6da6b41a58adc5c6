"""protoef.companion.tables / claims / notebook against values computed by hand here.

- `t_interval`, `paired_seed_difference`: means and Student-t half-widths written out with
  scipy.stats.t.ppf; `metrics_table`, `compare_models`: MAE / RMSE of six hand-made videos.
- `run_table`: hand-made run directories in the layout `training.lifecycle.finish` writes
  (metrics.json, config.json, history.csv, prototypes/); ratios, push change, PAS gradient
  share and the mean near-pair angle of 2-D prototypes at known angles.
- `claims`: the verdict rules, the stored claim files, the Markdown table and the README
  block, papermill durations, and five claim builders on hand-made tables (the method-of-
  discs EF of rectangular tracings, V = π/4·d²·L, computed by hand); the claims on per-video
  values are in tests/test_intervals.py.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from protoef.companion import claims, notebook, tables

T3 = stats.t.ppf(0.975, 2)  # two-sided 95 % quantile for three replicates


def interval_by_hand(values):
    values = np.asarray(values, float)
    mean, sd = values.mean(), values.std(ddof=1)
    half = T3 * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


# --------------------------------------------------------------------------- tables
def test_t_interval_of_three_values():
    result = tables.t_interval([4, 6, 8])
    half = stats.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)  # sample sd of 4, 6, 8 is 2
    assert result["mean"] == pytest.approx(6.0)
    assert result["low"] == pytest.approx(6.0 - half) and result["high"] == pytest.approx(6.0 + half)
    assert result["n"] == 3
    narrow = tables.t_interval([4, 6, 8], level=0.9)
    assert narrow["high"] == pytest.approx(6.0 + stats.t.ppf(0.95, 2) * 2.0 / math.sqrt(3))


def test_t_interval_single_value_and_nans():
    one = tables.t_interval([5.0])
    assert one["mean"] == 5.0 and one["n"] == 1 and math.isnan(one["low"]) and math.isnan(one["high"])
    dropped = tables.t_interval([4.0, np.nan, 6.0, 8.0, np.nan])
    assert dropped["n"] == 3 and dropped["mean"] == pytest.approx(6.0)
    assert dropped["high"] == pytest.approx(6.0 + T3 * 2.0 / math.sqrt(3))
    assert math.isnan(tables.t_interval([np.nan])["mean"])


def test_paired_seed_difference_skips_unpaired_seed():
    table = pd.DataFrame({"seed": [0, 1, 2, 3, 0, 1, 2],
                          "arm": ["pas"] * 4 + ["none"] * 3,
                          "mae": [4.0, 4.5, 5.5, 1.0, 4.2, 4.9, 5.6]})
    result = tables.paired_seed_difference(table, "mae", arm="arm", a="pas", b="none")
    mean, low, high = interval_by_hand([-0.2, -0.4, -0.1])  # seed 3 has no "none" run
    assert result["pairs"] == 3 and result["metric"] == "mae"
    assert result["difference"] == pytest.approx(mean)
    assert (result["low"], result["high"]) == pytest.approx((low, high))


def write_run(folder, *, black_box=False):
    """A finished run directory as `lifecycle.finish` leaves it (only what tables reads)."""
    folder.mkdir(parents=True)
    headline = {"mae": 4.5, "rmse": 6.0, "r2": 0.5, "f1_40": 0.8, "far_pair_angle": 80.0}
    metrics = {"best_epoch": 2, "val": {}, "trivial": {"train_mean_ef": 55.0, "test_mae": 9.0}}
    if black_box:
        metrics["test"] = {"final": {"mae": 6.0, "rmse": 7.0, "r2": 0.3, "f1_40": 0.6}}
    else:
        metrics["test"] = {"pre_push": {**headline, "mae": 5.0}, "post_push": headline}
        metrics["push"] = {"fallbacks": 0, "shared": 1, "distinct_sources": 3, "mean_similarity": 0.9}
        metrics["initial"] = {"far_pair_angle": 12.5, "label_range": [10.0, 80.0]}
        (folder / "config.json").write_text(json.dumps({"seed": 0, "loss": {"delta": 5.0}}))
        pd.DataFrame({"epoch": [1, 2, 3],
                      "train_grad_mse_prototypes": [3.0, 2.0, 0.0],
                      "train_grad_pas_prototypes": [1.0, 6.0, 0.0],
                      "train_grad_occ_prototypes": [0.0, 2.0, 0.0],
                      "train_grad_pas_features": [100.0, 100.0, 100.0]}).to_csv(folder / "history.csv", index=False)
        prototypes = folder / "prototypes"
        prototypes.mkdir()
        # Prototype j at angle ANGLES[j] (norms differ); the csv lists them out of order.
        angles, labels, norms = [0.0, 30.0, 90.0, 160.0], [20.0, 22.0, 60.0, 63.0], [1.0, 2.0, 0.5, 3.0]
        order = [2, 0, 3, 1]
        pd.DataFrame({"prototype": order, "ef_label": [labels[j] for j in order],
                      "source_filename": ["a.avi", "b.avi", "c.avi", "a.avi"], "clip_start": 0,
                      "similarity": 0.9, "fallback": False, "shared": False}).to_csv(prototypes / "prototypes.csv",
                                                                                    index=False)
        for j in range(4):
            theta = math.radians(angles[j])
            np.savez(prototypes / f"prototype_{j:02d}.npz", feature=norms[j] * np.array([math.cos(theta), math.sin(theta)]),
                     ef_label=labels[j])
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_run_table_protoefnet_and_black_box(tmp_path):
    proto, box = write_run(tmp_path / "p"), write_run(tmp_path / "b", black_box=True)
    table = tables.run_table({0: proto, 1: box}).set_index("seed")
    row = table.loc[0]
    assert row["mae"] == 4.5 and row["rmse"] == 6.0 and row["run"] == str(proto)  # the post-push stage
    assert row["mae_ratio_trivial"] == pytest.approx(4.5 / 9.0)
    assert row["push_mae_change"] == pytest.approx(4.5 - 5.0)
    assert row["distinct_sources"] == 3 and row["far_pair_angle_initial"] == 12.5
    # Epochs: pas / (mse + pas + occ) = 1/4, 6/10; the all-zero epoch has no share.
    assert row["pas_gradient_share"] == pytest.approx((0.25 + 0.6) / 2)
    # Near pairs (|Δl| ≤ 5): labels 20/22 at 0°/30°, 60/63 at 90°/160°.
    assert row["angle_near"] == pytest.approx((30.0 + 70.0) / 2)
    gaps, pair_angles = [2, 40, 43, 38, 41, 3], [30, 90, 160, 60, 130, 70]  # pairs 01 02 03 12 13 23, no ties
    assert row["rank_corr"] == pytest.approx(stats.spearmanr(gaps, pair_angles).statistic)
    assert table.loc[1, "mae"] == 6.0 and table.loc[1, "mae_ratio_trivial"] == pytest.approx(6.0 / 9.0)
    assert math.isnan(table.loc[1, "push_mae_change"])
    assert row["beta_sharpening_factor"] == 1.0  # no "beta_sharpening" entry: the knob was off
    sharpened = write_run(tmp_path / "s")
    metrics = json.loads((sharpened / "metrics.json").read_text()) | {"beta_sharpening": {"factor": 2.5, "grid": []}}
    (sharpened / "metrics.json").write_text(json.dumps(metrics))
    assert tables.run_table({0: sharpened}).loc[0, "beta_sharpening_factor"] == 2.5
    # A head refitted after the push was sharpened again: the final head's factor is that one.
    refitted = metrics | {"beta_sharpening_post_push": {"factor": 1.5, "grid": []}}
    (sharpened / "metrics.json").write_text(json.dumps(refitted))
    assert tables.run_table({0: sharpened}).loc[0, "beta_sharpening_factor"] == 1.5

    alone = tables.run_table({1: box})
    assert not {"push_mae_change", "distinct_sources", "far_pair_angle_initial", "angle_near",
                "pas_gradient_share", "beta_sharpening_factor"} & set(alone.columns)
    assert alone.loc[0, "r2"] == 0.3


def test_run_table_tuple_keys(tmp_path):
    table = tables.run_table({("PAS", 7): write_run(tmp_path / "p"), ("black box", 3): write_run(tmp_path / "b", black_box=True)},
                             keys=("arm", "seed"))
    assert list(table["arm"]) == ["PAS", "black box"] and list(table["seed"]) == [7, 3]
    assert list(table["mae"]) == [4.5, 6.0]


def test_metrics_table_keeps_metric_columns_per_stage():
    metrics = {"test": {"pre_push": {"rmse": 6.0, "mae": 5.0, "r2": 0.3, "n": 10, "top1_beta": 0.4},
                        "post_push": {"mae": 4.5, "rmse": 5.5, "r2": 0.4, "n": 10}}}
    table = tables.metrics_table(metrics)
    assert list(table.index) == ["pre_push", "post_push"] and list(table.columns) == ["mae", "rmse", "r2"]
    assert table.loc["pre_push"].tolist() == [5.0, 6.0, 0.3] and table.loc["post_push", "mae"] == 4.5


def predictions(errors, filenames=None):
    ef = np.array([30.0, 40.0, 50.0, 60.0, 70.0, 80.0])
    return pd.DataFrame({"filename": filenames or [f"v{i}.avi" for i in range(6)], "ef": ef, "prediction": ef + errors})


def test_compare_models_difference_by_hand():
    a, b = predictions([1, -2, 3, 0, 2, -1]), predictions([2, 2, -2, 4, 0, -2])
    result = tables.compare_models(a, b.iloc[::-1], metrics=("mae", "rmse"), n=200)  # row order does not matter
    assert result.loc["mae", "ProtoEFNet"] == pytest.approx(9 / 6) and result.loc["mae", "black box"] == pytest.approx(2.0)
    assert result.loc["mae", "difference"] == pytest.approx(9 / 6 - 2.0)
    assert result.loc["rmse", "difference"] == pytest.approx(math.sqrt(19 / 6) - math.sqrt(32 / 6))
    # When b's error is a's plus 1 on every video (same sign), every resample's MAE
    # difference is exactly −1: the interval is the point [−1, −1] and no resample reaches 0.
    shifted = predictions([1, 1, 2, 3, 2, 1]), predictions([2, 2, 3, 4, 3, 2])
    exact = tables.compare_models(*shifted, metrics=("mae",), n=200)
    assert exact.loc["mae", "ci_low"] == pytest.approx(-1.0) and exact.loc["mae", "ci_high"] == pytest.approx(-1.0)
    assert exact.loc["mae", "p_value"] == 0.0
    other = predictions([2, 2, -2, 4, 0, -2], [f"v{i}.avi" for i in range(5)] + ["elsewhere.avi"])
    with pytest.raises(ValueError, match="different videos"):
        tables.compare_models(a, other)
    extra = pd.DataFrame({"filename": ["extra.avi"], "ef": [55.0], "prediction": [64.0]})
    superset = pd.concat([b, extra], ignore_index=True)  # b tested on one video more
    with pytest.raises(ValueError, match="different videos"):
        tables.compare_models(a, superset)


# --------------------------------------------------------------------------- claims: verdicts and files
def test_verdict_rules():
    assert claims.verdict(0.8, 0.7, 0.9, below=1.0) == "holds"
    assert claims.verdict(1.1, 1.05, 1.2, below=1.0) == "does not hold"
    assert claims.verdict(0.95, 0.9, 1.1, below=1.0) == "inconclusive"
    assert claims.verdict(0.5, 0.1, 0.9, above=0.0) == "holds"
    assert claims.verdict(-0.5, -0.9, -0.1, above=0.0) == "does not hold"
    assert claims.verdict(0.1, -0.1, 0.3, above=0.0) == "inconclusive"
    assert claims.verdict(0.5, below=1.0) == "holds (single run, no interval)"
    assert claims.verdict(-2.0, above=0.0) == "does not hold (single run, no interval)"
    assert claims.verdict(math.nan, 0.1, 0.2, below=1.0) == "not measured"
    for thresholds in ({}, {"below": 1.0, "above": 0.0}):
        with pytest.raises(ValueError):
            claims.verdict(0.5, **thresholds)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "REPO", tmp_path)
    return tmp_path


def test_record_collect_and_write_results(repo):
    shown = claims.record("smoke", "03", [claims.Claim("A | B", "ratio", 1.23456, 1.0, 1.5, "holds", digits=3)])
    claims.record("smoke", "01", [claims.Claim("c1", "m1", 2.0, verdict="does not hold"),
                                  claims.Claim("c2", "m2", 0.5, 0.25, 0.75, "inconclusive", digits=1)])
    assert shown.loc[0, "value"] == "1.235" and shown.loc[0, "95 % interval"] == "[1.000, 1.500]"
    stored = json.loads((repo / "figures" / "smoke" / "claims" / "03.json").read_text())
    assert stored["notebook"] == "03" and stored["claims"][0]["claim"] == "A | B"

    executed = repo / "runs" / "smoke" / "notebooks"
    executed.mkdir(parents=True)
    (executed / "02_x.ipynb").write_text(json.dumps({"metadata": {"papermill": {"duration": 125.0}}}))
    (executed / "01_y.ipynb").write_text(json.dumps({"metadata": {"papermill": {"duration": 30.0}}}))
    (executed / "scratch.ipynb").write_text(json.dumps({"metadata": {"papermill": {"duration": 999.0}}}))
    lines = claims.collect("smoke").splitlines()
    assert lines[2] == "| notebook | claim | measured | value | 95 % interval | verdict |"
    assert lines[4:7] == ["| 01 | c1 | m1 | 2.00 | — | does not hold |",
                          "| 01 | c2 | m2 | 0.5 | [0.2, 0.8] | inconclusive |",
                          "| 03 | A \\| B | ratio | 1.235 | [1.000, 1.500] | holds |"]
    assert lines[-1] == "Wall time of the executed notebooks (papermill): 01 30 s, 02 2.1 min; total 2.6 min."

    readme = repo / "README.md"
    readme.write_text(f"intro\n{claims.BEGIN}\nold table\n{claims.END}\noutro\n")
    path = claims.write_results("smoke", readme)
    assert path == repo / "figures" / "smoke" / "results.md"
    table = path.read_text()
    assert "| 03 | A \\| B |" in table
    assert readme.read_text() == f"intro\n{claims.BEGIN}\n{table}{claims.END}\noutro\n"
    bare = repo / "BARE.md"
    bare.write_text("no markers here\n")
    with pytest.raises(ValueError, match="block"):
        claims.write_results("smoke", bare)
    assert bare.read_text() == "no markers here\n"
    with pytest.raises(FileNotFoundError):
        claims.collect("other")


# --------------------------------------------------------------------------- claims: builders
def test_on_par_claims():
    table = pd.DataFrame({"seed": [0, 1, 2] * 2, "model": ["ProtoEFNet"] * 3 + ["black box"] * 3,
                          "mae": [4.0, 4.04, 4.08, 4.0, 4.0, 4.0]})
    (claim,) = claims.on_par_claims(table)
    mean, low, high = interval_by_hand([1.0, 1.01, 1.02])
    assert (claim.value, claim.low, claim.high) == pytest.approx((mean, low, high))
    assert claim.verdict == "holds" and "3 seeds" in claim.measure  # high ≈ 1.035 < 1.10
    wide = table.assign(mae=[4.2, 4.0, 4.4, 4.0, 4.0, 4.0])
    (claim,) = claims.on_par_claims(wide)
    mean, low, high = interval_by_hand([1.05, 1.0, 1.1])
    assert claim.value == pytest.approx(mean) and claim.high == pytest.approx(high) and claim.verdict == "inconclusive"


def test_on_par_claims_counts_paired_seeds():
    table = pd.DataFrame({"seed": [0, 1, 2, 3, 0, 1, 2], "model": ["ProtoEFNet"] * 4 + ["black box"] * 3,
                          "mae": [4.0, 4.04, 4.08, 9.0, 4.0, 4.0, 4.0]})
    (claim,) = claims.on_par_claims(table)
    assert claim.value == pytest.approx(1.01)  # seed 3 has no black-box run
    assert "3 seeds" in claim.measure


def test_pas_claims():
    table = pd.DataFrame({"seed": [0, 1, 2, 3, 0, 1, 2, 0],
                          "pas_weight": [0.5] * 4 + [0.0] * 3 + [1.0],
                          "mae": [4.0, 4.1, 4.2, 1.0, 4.2, 4.5, 4.5, 0.0],
                          "far_pair_angle": [70.0, 90.0, 110.0, 0.0, 60.0, 70.0, 80.0, 0.0]})
    mae, angle = claims.pas_claims(table, default=0.5)
    expected = interval_by_hand([-0.2, -0.4, -0.3])  # [−0.55, −0.05] straddles the −0.1 threshold
    assert (mae.value, mae.low, mae.high) == pytest.approx(expected) and mae.verdict == "inconclusive"
    strong = claims.pas_claims(table.assign(mae=[4.0, 4.1, 4.2, 1.0, 4.4, 4.5, 4.6, 0.0]), default=0.5)[0]
    assert strong.value == pytest.approx(-0.4) and strong.verdict == "holds"  # −0.4 on every seed: [−0.4, −0.4]
    expected = interval_by_hand([10.0, 20.0, 30.0])  # [−4.8, 44.8] straddles 2°
    assert (angle.value, angle.low, angle.high) == pytest.approx(expected) and angle.verdict == "inconclusive"
    assert "3 seeds" in mae.measure and angle.digits == 1


def rectangle(name, frame, length, width, chords=4):
    """VolumeTracings rows of a rectangular LV: vertical long axis, `chords` equal chords."""
    rows = [f"{name}.avi,50,10,50,{10 + length},{frame}"]
    rows += [f"{name}.avi,{50 - width / 2},{12 + 5 * i},{50 + width / 2},{12 + 5 * i},{frame}" for i in range(chords)]
    return rows


def test_data_claims(tmp_path):
    # V = π/4 · d² · L: EF(A) = 100·(1 − 16²·30 / (20²·40)) = 52, EF(B) = 75, EF(C) = 20.
    (tmp_path / "FileList.csv").write_text("FileName,EF,Split\nA,52.0,TRAIN\nB,78.0,TRAIN\nC,20.5,TEST\nD,50.0,VAL\n")
    lines = (["FileName,X1,Y1,X2,Y2,Frame"] + rectangle("A", 30, 30, 16) + rectangle("A", 10, 40, 20)
             + rectangle("B", 3, 40, 20) + rectangle("B", 9, 40, 10, chords=8)
             + rectangle("C", 1, 50, 10) + rectangle("C", 5, 40, 10)
             + rectangle("D", 1, 40, 20)  # one traced frame: no EF
             + rectangle("UNLISTED", 1, 40, 20) + rectangle("UNLISTED", 2, 30, 20))
    (tmp_path / "VolumeTracings.csv").write_text("\n".join(lines) + "\n")
    (claim,) = claims.data_claims(tmp_path)
    assert claim.value == pytest.approx(np.median([0.0, 3.0, 0.5]))
    assert "3 traced videos" in claim.measure
    assert (claim.low, claim.high) == pytest.approx((0.0, 3.0))  # medians of resampled {0, 0.5, 3}
    assert claim.verdict == "inconclusive"


def test_tidy_executed_drops_progress_bars_and_keeps_results(tmp_path):
    widget = {"output_type": "display_data", "metadata": {},
              "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": ["epoch 1:   0%"]}}
    bar = {"output_type": "stream", "name": "stderr", "text": ["\r", "videos:  10%|#         | 1/10"]}
    printed = {"output_type": "stream", "name": "stdout", "text": ["[train] epoch 1/2  loss 1.0\n"]}
    warning = {"output_type": "stream", "name": "stderr", "text": ["UserWarning: something\n"]}
    figure = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": ["<Figure>"]}}
    stored = {"cells": [{"cell_type": "code", "source": [], "metadata": {}, "outputs": [bar, widget, printed, warning, figure]},
                        {"cell_type": "markdown", "source": ["# x"], "metadata": {}}],
              "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"big": 1}}, "kernelspec": {"name": "python3"}},
              "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "02_x.ipynb"
    path.write_text(json.dumps(stored))
    notebook.tidy_executed(path)
    tidied = json.loads(path.read_text())
    assert tidied["cells"][0]["outputs"] == [printed, warning, figure]
    assert tidied["cells"][1] == stored["cells"][1] and "widgets" not in tidied["metadata"]
    assert tidied["metadata"]["kernelspec"] == {"name": "python3"}


def test_run_all_gets_its_folders_from_python_and_force_forgets_only_that_profiles_runs(tmp_path, monkeypatch):
    import subprocess
    from protoef.companion import notebook as nb
    monkeypatch.setattr(nb, "REPO", tmp_path)
    monkeypatch.setenv("PROTOEF_CACHE", str(tmp_path / "cache"))
    for folder in ("runs/smoke-a", "runs/smoke-b/checkpoints", "runs/demo-a", "cache/warmstart/r2plus1d_10-x"):
        (tmp_path / folder).mkdir(parents=True)
    removed = nb.forget_runs("smoke")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == ["cache/warmstart", "runs/smoke-a", "runs/smoke-b"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo-a"] and not (tmp_path / "cache" / "warmstart").exists()
    # What run_all.sh evaluates: plain shell assignments, even for a path with a space.
    monkeypatch.setattr(nb, "REPO", tmp_path / "my repo")
    script = nb.shell_paths("smoke") + '\nprintf "%s|%s|%s" "$executed" "$staging" "$figures"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    root = tmp_path / "my repo"
    assert out == f"{root}/runs/smoke/notebooks|{root}/runs/smoke/executing|{root}/figures/smoke"
