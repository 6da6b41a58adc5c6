"""The benchmark items by name, in the order the suite runs them. Each takes `quick` and
returns a result dict (written by __main__); they live in steps, data_pipeline, runtime,
explanations and gpu."""
from __future__ import annotations

from . import runtime
from .data_pipeline import pipeline
from .explanations import deletion
from .gpu import gpu
from .steps import blackbox, head, pooling, scaling

ITEMS = {"head": head, "pooling": pooling, "pipeline": pipeline, "scaling": scaling, "blackbox": blackbox,
         "epoch": runtime.epoch, "runend": runtime.runend, "numerics": runtime.numerics, "breakdown": runtime.breakdown,
         "levers": runtime.levers, "concurrency": runtime.concurrency,
         "deletion": deletion, "gpu": gpu}
