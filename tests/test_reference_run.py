"""The cross-machine reference: a short pinned run must give, bit for bit, the numbers a
committed run gave on the machine that made it (README, "Same numbers on every machine").

`tests/reference/` holds what that run wrote: `history.csv` (every loss term, gradient norm,
validation metric and diagnostic per epoch), `metrics.json` (validation and test before and
after the push, push summary, diagnostics) and `environment.json` (the machine and versions
it ran on), plus `run.json`, the config it ran (a demo-shaped run, 2 epochs on 40 synthetic
videos, no warm start). CI runs on whichever machine the session has, so every session
checks the guarantee on another machine. The synthetic data set is generated inside the
test, so its determinism is checked too.

Regenerate only together with a change that is meant to change numbers, and say so in the
commit: ``PROTOEF_UPDATE_REFERENCE=1 ./run_all.sh --test tests/test_reference_run.py``.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil

import pandas as pd
import pytest

from protoef import numerics
from protoef.config import resolve
from protoef.training.lifecycle import fit

REFERENCE = pathlib.Path(__file__).resolve().parent / "reference"
WALL_CLOCK = ("seconds_",)  # history columns that measure time, not numbers
# What names a machine's numerics: a difference in one of these explains a mismatch.
ENVIRONMENT_KEYS = ("python", "platform", "torch", "torchvision", "numpy", "opencv", "scikit_learn", "torch_threads")


def flatten(value, prefix=""):
    """{"test.post_push.mae": 12.0, ...}: every leaf of a JSON document under its dotted path."""
    if isinstance(value, dict):
        return {key: leaf for name, item in value.items() for key, leaf in flatten(item, f"{prefix}{name}.").items()}
    if isinstance(value, list):
        return {key: leaf for index, item in enumerate(value) for key, leaf in flatten(item, f"{prefix}{index}.").items()}
    return {prefix[:-1]: value}


def read_text_table(path) -> pd.DataFrame:
    """A CSV as the text it holds ("nan" stays the string "nan", equal to itself)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)


def first_history_difference(reference: pd.DataFrame, run: pd.DataFrame) -> str | None:
    """The first (column order, then epoch) history value that differs, compared as the
    written text: a float differs iff its 17-significant-digit repr does."""
    missing = [column for column in reference.columns if column not in run.columns]
    if missing:
        return f"history.csv lacks the reference column(s) {missing}"
    if len(run) != len(reference):
        return f"history.csv has {len(run)} epochs, the reference {len(reference)}"
    for column in reference.columns:
        if column.startswith(WALL_CLOCK):
            continue
        for row in range(len(reference)):
            if reference[column].iloc[row] != run[column].iloc[row]:
                return (f"history.csv column {column!r}, epoch {reference['epoch'].iloc[row]}: reference "
                        f"{reference[column].iloc[row]}, this machine {run[column].iloc[row]}")
    return None


def first_metrics_difference(reference: dict, run: dict) -> str | None:
    ours = flatten(run)
    for key, value in flatten(reference).items():
        if key not in ours:
            return f"metrics.json lacks the reference key {key!r}"
        if ours[key] != value:
            return f"metrics.json {key!r}: reference {value!r}, this machine {ours[key]!r}"
    return None


def environment_differences(reference: dict, run: dict) -> list[str]:
    found = [f"{key}: reference {reference.get(key)!r}, here {run.get(key)!r}"
             for key in ENVIRONMENT_KEYS if reference.get(key) != run.get(key)]
    ours, theirs = run.get("numerics", {}), reference.get("numerics", {})
    for key in ("mode", "effective", "aten_cpu_capability", "torch_threads", "machine", "cpu_flags"):
        if ours.get(key) != theirs.get(key):
            found.append(f"numerics.{key}: reference {theirs.get(key)!r}, here {ours.get(key)!r}")
    differs = (run.get("lock") or {}).get("differs") or {}
    if differs:
        found.append(f"{len(differs)} package(s) differ from requirements.lock: {sorted(differs)[:8]}")
    return found


def run_reference(tmp_path: pathlib.Path) -> pathlib.Path:
    spec = json.loads((REFERENCE / "run.json").read_text())
    overrides = spec["overrides"] | {"data.cache_dir": str(tmp_path / "cache"), "device": "cpu"}
    out = tmp_path / "reference-run"
    fit(resolve(spec["profile"], overrides), out)
    return out


@pytest.mark.slow
def test_a_pinned_run_reproduces_the_committed_reference_bit_for_bit(tmp_path):
    if numerics.mode() != "pinned":
        pytest.skip(f"{numerics.MODE_VARIABLE}=native: the bit-for-bit guarantee holds for pinned numerics only")
    out = run_reference(tmp_path)
    if os.environ.get("PROTOEF_UPDATE_REFERENCE") == "1":
        for name in ("history.csv", "metrics.json", "environment.json"):
            shutil.copy(out / name, REFERENCE / name)
        pytest.skip(f"reference rewritten in {REFERENCE}: commit it with the change that moved the numbers")

    run_environment = json.loads((out / "environment.json").read_text())
    assert run_environment["numerics"]["effective"], run_environment["numerics"]["problems"]
    history = first_history_difference(read_text_table(REFERENCE / "history.csv"), read_text_table(out / "history.csv"))
    metrics = first_metrics_difference(json.loads((REFERENCE / "metrics.json").read_text()),
                                       json.loads((out / "metrics.json").read_text()))
    if history or metrics:
        differences = environment_differences(json.loads((REFERENCE / "environment.json").read_text()), run_environment)
        pytest.fail(f"the pinned reference run differs from tests/reference/: {history or metrics}. "
                    f"Environment differences from the reference machine: {differences or 'none recorded'}. "
                    "If a change was meant to move the numbers, regenerate the reference (module docstring).")


# ----------------------------------------------------------------------------- the comparison itself
def test_the_comparison_names_the_first_differing_column_and_key():
    reference = pd.DataFrame({"epoch": ["1", "2"], "train_loss": ["1.5", "1.25"], "val_mae": ["9.0", "8.5"],
                              "seconds_train": ["3.1", "3.2"]})
    same_but_slower = reference.assign(seconds_train=["9.9", "9.8"])
    assert first_history_difference(reference, same_but_slower) is None
    drifted = reference.assign(val_mae=["9.0", "8.500000000000002"])
    assert first_history_difference(reference, drifted) == (
        "history.csv column 'val_mae', epoch 2: reference 8.5, this machine 8.500000000000002")
    assert "lacks the reference column(s) ['val_mae']" in first_history_difference(reference, reference.drop(columns="val_mae"))
    # A run may add diagnostics: columns the reference lacks are not a difference.
    assert first_history_difference(reference, reference.assign(val_new="0.1")) is None

    assert first_metrics_difference({"test": {"post_push": {"mae": 12.0}}, "push": {"shared": [1, 2]}},
                                    {"test": {"post_push": {"mae": 12.0}}, "push": {"shared": [1, 3]}}) == (
        "metrics.json 'push.shared.1': reference 2, this machine 3")
    assert first_metrics_difference({"a": {"b": 1}}, {"a": {}}) == "metrics.json lacks the reference key 'a.b'"


def test_environment_differences_name_the_machine_and_versions():
    reference = {"torch": "2.14.1", "numerics": {"mode": "pinned", "aten_cpu_capability": "AVX2", "machine": "A"}}
    here = {"torch": "2.15.0", "numerics": {"mode": "pinned", "aten_cpu_capability": "AVX2", "machine": "B"},
            "lock": {"differs": {"torch": ["2.14.1", "2.15.0"]}}}
    found = environment_differences(reference, here)
    assert "torch: reference '2.14.1', here '2.15.0'" in found
    assert "numerics.machine: reference 'A', here 'B'" in found
    assert "1 package(s) differ from requirements.lock: ['torch']" in found
    assert not any("aten_cpu_capability" in line for line in found)
