"""Fixtures shared by several test modules: one data cache and one finished smoke run for the
whole session, so the modules that only read a run (test_train, test_bad_inputs*) train and
generate their synthetic data once instead of once per module. Tests never write into
either: the ones that corrupt or resume a run work on a copy (`interrupted_run`, copytree)."""
from __future__ import annotations

import os
import pathlib

import pytest

from protoef.config import resolve
from protoef.training.lifecycle import fit


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def recorded_smoke_run(cache, tmp_path_factory) -> tuple[pathlib.Path, list[pathlib.Path]]:
    """A trained smoke run, and every path `os.replace` moved into place while it was written."""
    out = tmp_path_factory.mktemp("run") / "smoke"
    replaced, replace = [], os.replace

    def recording_replace(source, destination):
        replaced.append(pathlib.Path(destination))
        return replace(source, destination)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", recording_replace)
        fit(resolve("smoke", {"data.cache_dir": str(cache)}), out)  # = tests.test_train.smoke(cache)
    return out, replaced
