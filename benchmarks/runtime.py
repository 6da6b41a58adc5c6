"""Benchmark items about a whole run's time: what the pinned numerical environment costs,
and where a demo run's minutes go (README, "Same numbers on every machine"; issue #18)."""
from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from .common import ROOT, ratio

# A demo-shape training step (benchmarks.child): batch 8 of 8 × 32² clips, R(2+1)D-10 to layer3, P = 40.
DEMO_STEP = {"backbone": "r2plus1d_10", "batch": 8, "frames": 8, "size": 32, "prototypes": 40, "model": "protoef"}


def child_environment(mode: str) -> dict:
    """The environment of a child in `mode`: native drops the pinned variables this process
    inherited or set (``import protoef`` sets them), so the child gets the machine's own."""
    from protoef import numerics

    env = numerics.without_pin(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env[numerics.MODE_VARIABLE] = mode
    return env


def _steps_in_child(mode: str, reps: int, **options) -> dict:
    spec = {**DEMO_STEP, "reps": reps, **options}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.child", json.dumps(spec)], cwd=ROOT,
                          env=child_environment(mode), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"child ({mode}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def numerics(quick: bool) -> dict:
    """What pinning costs: demo-shape training steps in fresh processes, pinned (AVX2, 2
    threads) and native (this CPU's kernels and threads), alternating process by process."""
    rounds, reps = (2, 8) if quick else (4, 15)
    times = {"pinned": [], "native": []}
    threads = {}
    for _ in range(rounds):
        for mode in ("pinned", "native"):
            result = _steps_in_child(mode, reps)
            times[mode] += result["seconds"][2:]  # the first steps of a fresh process warm oneDNN up
            threads[mode] = result["threads"]
    best = {mode: min(values) for mode, values in times.items()}
    median = {mode: statistics.median(values) for mode, values in times.items()}
    from protoef import numerics as pinned

    flags = pinned.state()["cpu_flags"]
    return {"title": "Pinned numerical environment: cost", "measurements": {"seconds": times, "threads": threads,
                                                                          "cpu_flags": flags},
            "ratios": [ratio("pinned ÷ native step time, demo-shape training step", best["pinned"] / best["native"],
                             note=f"min of {len(times['pinned'])} steps each in {rounds} alternating fresh processes "
                                  f"({best['pinned'] * 1000:.0f} vs {best['native'] * 1000:.0f} ms; medians "
                                  f"{median['pinned'] * 1000:.0f} vs {median['native'] * 1000:.0f} ms); native: "
                                  f"{threads['native']} threads, AVX-512 {'yes' if (flags or {}).get('avx512f') else 'no'}")]}


# The architecture levers of issues 17 and 18 (protoef.config: model.output_stride, model.frozen_stages).
LEVERS = {"today (stride 8, nothing frozen)": {"output_stride": 8, "frozen_stages": 0},
          "stem + layer1 frozen": {"output_stride": 8, "frozen_stages": 2},
          "8 x 8 maps (stride 4)": {"output_stride": 4, "frozen_stages": 0},
          "8 x 8 maps, stem + layer1 frozen": {"output_stride": 4, "frozen_stages": 2},
          "8 x 8 maps, stem to layer2 frozen": {"output_stride": 4, "frozen_stages": 3}}


def levers(quick: bool) -> dict:
    """What the 8 x 8 occurrence maps cost and what freezing the warm-started early stages
    saves: pinned demo-shape training steps in fresh processes, the variants alternating."""
    rounds, reps = (1, 8) if quick else (3, 12)
    times = {name: [] for name in LEVERS}
    for _ in range(rounds):
        for name, options in LEVERS.items():
            times[name] += _steps_in_child("pinned", reps, **options)["seconds"][2:]
    best = {name: min(values) for name, values in times.items()}
    baseline = next(iter(LEVERS))
    return {"title": "Architecture levers: step cost", "measurements": {"seconds": times, "levers": LEVERS},
            "ratios": [ratio(f"{name} ÷ {baseline}, demo-shape training step", best[name] / best[baseline],
                             note=f"min of {len(times[name])} steps in {rounds} fresh processes "
                                  f"({best[name] * 1000:.0f} vs {best[baseline] * 1000:.0f} ms)")
                       for name in LEVERS if name != baseline]}


def _demo_runs() -> list:
    """The full-length demo-profile ProtoEFNet runs ./run_all.sh wrote (those with timings.json)."""
    from protoef.config import get_key, resolve

    from protoef.training.runs import RunDir

    epochs, found = resolve("demo").optim.epochs, []
    for run in map(RunDir, sorted((ROOT / "runs").glob("demo-*"))):
        if not run.timings_file.is_file():
            continue
        config = run.read_config()
        if get_key(config, "model.kind") == "protoefnet" and get_key(config, "optim.epochs") == epochs:
            found.append(run)
    return found


def _short_demo_run(tmp: pathlib.Path) -> pathlib.Path:
    """No demo runs on disk: a shortened demo run (3 epochs, 120 videos, no warm start) here."""
    from protoef.config import resolve
    from protoef.training.lifecycle import fit
    from protoef.training.runs import RunDir

    out = tmp / "demo-short"
    overrides = {"model.weights": None, "data.synthetic_videos": 120, "optim.epochs": 3,
                 "data.cache_dir": str(tmp / "cache"), "device": "cpu"}
    fit(resolve("demo", overrides), out)
    return RunDir(out)


def breakdown(quick: bool) -> dict:
    """Where a demo run's minutes go, per stage (timings.json of each run): the warm start,
    the epochs (training steps, of which the diagnostic batches; VAL per epoch), the push and
    the evaluations. From the demo runs on disk when ./run_all.sh made them, else from a
    shortened demo run made here."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = _demo_runs()
        source = "runs/demo-* of ./run_all.sh" if runs else "a shortened demo run (3 epochs, 120 videos)"
        runs = runs or [_short_demo_run(pathlib.Path(tmp))]
        table = {run.path.name: run.read_timings()["seconds"] for run in runs}
    # The stages as the runs wrote them (protoef.training.lifecycle names them), in their order.
    names = list(dict.fromkeys(stage for seconds in table.values() for stage in seconds))
    # The warm start is paid by the first run only (later ones find it cached): its max, not its mean.
    stages = {stage: (max if stage == "warm_start" else statistics.mean)(seconds.get(stage, 0.0) for seconds in table.values())
              for stage in names}
    total = sum(value for stage, value in stages.items() if stage not in ("epochs_diagnostics", "warm_start"))
    ratios = [ratio(f"share of a run (warm start aside): {stage}", value / total, unit="×",
                    note=f"{value:.1f} s of {total:.1f} s, mean over {len(table)} run(s) from {source}")
              for stage, value in stages.items() if stage not in ("warm_start",) and value > 0]
    ratios.append(ratio("warm start ÷ one run (pretraining, paid once and shared by every demo run; 0 if cached)",
                        stages.get("warm_start", 0.0) / total, note=f"{stages.get('warm_start', 0.0):.1f} s"))
    return {"title": "Where a demo run's time goes", "measurements": {"runs": table, "mean": stages, "source": source},
            "ratios": ratios}
