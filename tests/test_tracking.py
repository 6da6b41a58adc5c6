"""The optional TensorBoard log: off by default, one scalar per history column and epoch
when on (read back with TensorBoard's own event reader), a clear error without the package."""
from __future__ import annotations

import builtins

import pandas as pd
import pytest

from protoef.config import resolve
from protoef.training.lifecycle import fit
from protoef.training.tracking import TensorBoardLog, scalar_tag


def test_history_columns_map_to_grouped_tags():
    assert scalar_tag("train_loss") == "train/loss"
    assert scalar_tag("val_f1_40") == "val/f1_40"
    assert scalar_tag("lr_features") == "lr/features"
    assert scalar_tag("diagnostic") == "diagnostic"


def test_a_run_with_tensorboard_logs_every_history_column_per_epoch(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is an optional extra: pip install -e '.[monitor]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    fit(resolve("smoke", {"data.cache_dir": str(tmp_path / "cache"), "tensorboard": True}), out)
    history = pd.read_csv(out / "history.csv")
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    expected = {scalar_tag(column) for column in history.columns if column != "epoch"}
    assert {"train/loss", "train/occurrence", "val/mae", "val/r2", "lr/backbone"} <= expected
    assert tags == expected
    for column in ("train_loss", "val_mae", "lr_head"):
        logged = events.Scalars(scalar_tag(column))
        assert [e.step for e in logged] == list(history["epoch"])
        assert [e.value for e in logged] == pytest.approx(list(history[column]), rel=1e-6)


def test_asking_for_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[monitor\]'"):
        TensorBoardLog(tmp_path)
