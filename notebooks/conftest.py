"""Notebook tests (nbval): every notebook runs as stored, in the seconds-long smoke
profile. The parameters cell of each notebook reads PROTOEF_PROFILE as its default, and
the Jupyter kernel inherits this environment variable from pytest."""
import os

import pytest

os.environ["PROTOEF_PROFILE"] = "smoke"


def pytest_collection_modifyitems(items):
    # Each notebook starts a kernel and trains its smoke runs: part of CI, not of the quick
    # inner loop (./run_all.sh --test -m "not slow").
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
