"""Shared helpers: seeding, interleaved timing, fresh-process memory, result files, scratch
folders, and the demo shape and synthetic data set several items use."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SEED = 0
DEMO = dict(backbone="r2plus1d_10", batch=8, frames=8, size=32, prototypes=40)   # config "demo"
# Pixel mean and std of the synthetic TRAIN videos (`protoef.data.compute_mean_std`), set
# directly so a benchmark does not time that pass; the one copy of these numbers here.
SYNTHETIC_MEAN_STD = (0.1289, 0.1911)


def seed_everything(seed: int = SEED) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_info() -> dict:
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "cuda": torch.cuda.is_available(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}  # other work on the machine
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def stats(seconds: list[float]) -> dict:
    return {"n": len(seconds), "min_s": min(seconds), "median_s": statistics.median(seconds),
            "all_s": [round(s, 5) for s in seconds]}


def interleave(variants: dict, reps: int, *, warmup: int = 1) -> dict[str, dict]:
    """Time each callable in `variants` `reps` times, round-robin (A B C A B C ...), so drift
    and background load hit every variant alike. `warmup` untimed calls each first."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: stats(values) for name, values in times.items()}


def ratio(name: str, value: float, target: str | None = None, *, unit: str = "×", note: str = "") -> dict:
    """A ratio with its target: target like '<= 1.10' or '>= 2', or None (informational)."""
    passed = None
    if target is not None:
        op, bound = target.split()
        passed = bool(value <= float(bound)) if op == "<=" else bool(value >= float(bound))
    return {"name": name, "value": value, "unit": unit, "target": target, "pass": passed, "note": note}


def run_child(spec: dict, timeout: float = 300) -> dict:
    """Run benchmarks.child with `spec` in a fresh interpreter (its own peak RSS)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.child", json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_result(name: str, result: dict) -> pathlib.Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return path


@contextlib.contextmanager
def scratch(prefix: str):
    """A fresh temporary folder (pathlib.Path), removed with what is in it on the way out."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def demo_synthetic_root() -> pathlib.Path:
    """The demo profile's synthetic set in the repository cache (the profile names it)."""
    from protoef.config import resolve
    from protoef.training.build import synthetic_root

    return synthetic_root(resolve("demo", {"data.cache_dir": str(ROOT / ".cache")}))


def demo_data_root(tmp: pathlib.Path) -> pathlib.Path:
    """The demo synthetic set if the cache holds it (read only), else 120 videos made in `tmp`."""
    if (demo_synthetic_root() / "FileList.csv").is_file():
        return demo_synthetic_root()  # read only
    from protoef.data import synthetic

    return synthetic.generate(tmp / "synthetic-120", videos=120, seed=SEED, progress=False)
