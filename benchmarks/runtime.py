"""Benchmark items about a whole run's time: what the pinned numerical environment costs,
where a demo run's minutes go (README, "Same numbers on every machine"; issue #18), what
two jobs at once on the same cores give or cost, what loader workers cost in a demo epoch,
and the end of a run with and without the gallery."""
from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import warnings

from .common import DEMO, ROOT, SEED, SYNTHETIC_MEAN_STD, demo_data_root, interleave, ratio, scratch, seed_everything

# A demo-shape training step (benchmarks.child): batch 8 of 8 × 32² clips, R(2+1)D-10 to layer3, P = 40.
DEMO_STEP = {**DEMO, "model": "protoef"}


def child_environment(mode: str) -> dict:
    """The environment of a child in `mode`: native drops the pinned variables this process
    inherited or set (``import protoef`` sets them), so the child gets the machine's own."""
    from protoef import numerics

    env = numerics.without_pin(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env[numerics.MODE_VARIABLE] = mode
    return env


def _steps_in_children(mode: str, reps: int, *, processes: int = 1, extra_env: dict | None = None,
                       **options) -> list[dict]:
    """`processes` children in `mode` (demo-shape training steps, `options` on top), started
    together; one result per child."""
    env = {**child_environment(mode), **(extra_env or {})}
    command = [sys.executable, "-m", "benchmarks.child", json.dumps({**DEMO_STEP, "reps": reps, **options})]
    children = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(processes)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=1200)
        if child.returncode != 0:
            raise RuntimeError(f"child ({mode}, {options}, {extra_env}) failed:\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _steps_in_child(mode: str, reps: int, **options) -> dict:
    return _steps_in_children(mode, reps, **options)[0]


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


# The architecture levers of issues 17 and 18 (protoef.config: model.output_stride, model.frozen_stages,
# model.feature_stage).
LEVERS = {"today (stride 8, nothing frozen)": {"output_stride": 8, "frozen_stages": 0},
          "stem + layer1 frozen": {"output_stride": 8, "frozen_stages": 2},
          "8 x 8 maps (stride 4)": {"output_stride": 4, "frozen_stages": 0},
          "8 x 8 maps, stem + layer1 frozen": {"output_stride": 4, "frozen_stages": 2},
          "8 x 8 maps, stem to layer2 frozen": {"output_stride": 4, "frozen_stages": 3},
          "8 x 8 maps from layer2 (no layer3), stem + layer1 frozen": {"output_stride": 4, "frozen_stages": 2,
                                                                       "feature_stage": "layer2"}}


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


# Two heavy jobs on one 2-core machine (issue #18): the demo's studies as processes side by
# side instead of one 2-thread run at a time, and what a second job started beside a run
# costs. Each row: (processes started at once, child options, extra environment).
CONCURRENCY = {"one process, 2 threads (the demo's)": (1, {}, {}),
               "two processes, 1 thread each": (2, {"threads": 1}, {}),
               "two processes, 2 threads each": (2, {}, {}),
               "two processes, 2 threads each, OMP_WAIT_POLICY=PASSIVE": (2, {}, {"OMP_WAIT_POLICY": "PASSIVE"}),
               "one process, 2 threads, OMP_WAIT_POLICY=PASSIVE": (1, {}, {"OMP_WAIT_POLICY": "PASSIVE"})}


def concurrency(quick: bool) -> dict:
    """Training steps per second of the whole machine (the sum over the processes of 1 ÷ each
    one's median step, steps after the first two) for each `CONCURRENCY` row, against one
    pinned process with 2 threads. The children start together and run the same steps, so
    their steps overlap; the medians keep the unshared start and end out."""
    reps = 12 if quick else 24
    rows = {}
    for name, (processes, options, extra_env) in CONCURRENCY.items():
        results = _steps_in_children("pinned", reps, processes=processes, extra_env=extra_env, **options)
        medians = [statistics.median(result["seconds"][2:]) for result in results]
        rows[name] = {"median_step_s": medians, "steps_per_s": sum(1 / m for m in medians),
                      "threads": [result["threads"] for result in results], "seconds": [r["seconds"] for r in results]}
    baseline = next(iter(CONCURRENCY))
    base = rows[baseline]["steps_per_s"]
    return {"title": "Two jobs at once on the same cores", "measurements": rows,
            "ratios": [ratio(f"{name}: steps/s of the machine ÷ {baseline}", row["steps_per_s"] / base,
                             note="median step " + " / ".join(f"{m * 1000:.0f}" for m in row["median_step_s"])
                                  + f" ms per process (one process, 2 threads: {1000 / base:.0f} ms)")
                       for name, row in rows.items() if name != baseline]}


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
    with scratch("protoef-bench-breakdown-") as tmp:
        runs = _demo_runs()
        source = "runs/demo-* of ./run_all.sh" if runs else "a shortened demo run (3 epochs, 120 videos)"
        runs = runs or [_short_demo_run(tmp)]
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


# ----------------------------------------------------------------------- whole epoch
def _demo_run_parts(tmp: pathlib.Path):
    """What `fit` builds for a demo run, with the decoded cache in `tmp`: config, the four
    data sets, the run context (CPU) and a freshly seeded model (random weights)."""
    from protoef.config import resolve
    from protoef.training.build import RunContext, build_model, training_datasets

    # Random weights: the warm start (9 min, cached per checkout) changes no time measured here.
    config = resolve("demo", {"data.cache_dir": str(tmp), "device": "cpu", "model.weights": None})
    config.data.mean, config.data.std = SYNTHETIC_MEAN_STD  # skip that pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sets = training_datasets(config, demo_data_root(tmp))
    seed_everything()
    return config, sets, RunContext(config), build_model(config)


def epoch(quick: bool) -> dict:
    """One demo training epoch (300 videos, warm decoded cache, `loops.train_epoch` as `fit`
    runs it) with the loader in 2 worker processes vs in the training process (the demo
    default since this measurement)."""
    import torch

    from protoef.data import oversampling_sampler
    from protoef.training.build import build_loss, build_optimizer, make_loader
    from protoef.training.loops import train_epoch

    with scratch("protoef-bench-epoch-") as tmp:
        config, sets, context, model = _demo_run_parts(tmp)
        train_set = sets["train"]
        if quick:
            train_set.records = train_set.records[:96]
        for index in range(len(train_set)):  # fill the decoded cache (the first epoch's extra cost)
            train_set.frames(index)
        optimizer, loss_fn = build_optimizer(model, config), build_loss(config)

        def run_epoch(workers: int):
            config.data.num_workers = workers
            generator = torch.Generator().manual_seed(SEED)
            sampler = oversampling_sampler(train_set.efs, threshold=config.data.oversample_threshold, generator=generator)
            train_epoch(model, make_loader(train_set, config, shuffle_seed=SEED, sampler=sampler), loss_fn, optimizer, context, desc="epoch")

        timings = interleave({"workers_2": lambda: run_epoch(2), "workers_0": lambda: run_epoch(0)}, 1 if quick else 3, warmup=1)
    two, zero = timings["workers_2"]["min_s"], timings["workers_0"]["min_s"]
    return {
        "title": "Demo training epoch: loader workers 2 vs 0 (warm decoded cache)",
        "shapes": {"demo": f"{len(train_set)} videos, batch {config.data.batch_size}, {config.data.clip_length} frames every "
                           f"{config.data.period}th at {config.data.resize}², augment + masks, {torch.get_num_threads()} torch threads"},
        "measurements": timings,
        "ratios": [ratio("demo epoch, 2 loader workers ÷ loader in the training process (speed-up of num_workers=0)",
                         two / zero,
                         note=f"{two:.2f} s vs {zero:.2f} s per epoch of {len(train_set)} videos, min of {timings['workers_0']['n']} "
                              f"(medians {timings['workers_2']['median_s']:.2f} vs {timings['workers_0']['median_s']:.2f} s); "
                              "hence the demo profile's num_workers=0")],
    }


# ----------------------------------------------------------------------- run end
# The forward passes the end of a demo run made before it kept one pass per split
# (`loops.EncodedSet`): VAL for sharpening and metrics before and after the push (4 passes
# in all, 1 now), TEST before and after (2, 1 now), the push set after the push (1, 0 now:
# the push's own pass).
PASSES_SAVED = {"val": 3, "test": 1, "push": 1}


def runend(quick: bool) -> dict:
    """End of a demo run (evaluate, push, evaluate, artefacts) vs the prototype gallery that
    used to be drawn inside it; now notebook 08 / `protoef gallery` draw it on request. And
    what one encoder pass per split saves: the run end as it is, against it plus the passes
    it no longer makes (`PASSES_SAVED`, each timed here as `loops.predict` on its loader)."""
    import copy

    import torch

    from protoef.analysis.explain import save_prototype_gallery
    from protoef.data import videos_per_batch
    from protoef.training import runs
    from protoef.training.build import make_loader
    from protoef.training.lifecycle import finish
    from protoef.training.loops import predict

    with scratch("protoef-bench-end-") as tmp:
        config, sets, context, model = _demo_run_parts(tmp)
        initial = copy.deepcopy(model.state_dict())  # finish pushes: restart from the same weights
        count = iter(range(100))

        def end_of_run():
            out = tmp / f"run{next(count)}"
            model.load_state_dict(initial)
            runs.RunDir(out).save_checkpoint("best", {"model": initial, "epoch": 0, "config": config.to_dict()})
            torch.manual_seed(SEED)
            finish(model, config, sets, context, out)
            return out

        outs = []
        eval_batch = videos_per_batch(config.data.batch_size, config.data.test_clips)
        loaders = {"val": make_loader(sets["val"], config), "test": make_loader(sets["test"], config, batch_size=eval_batch),
                   "push": make_loader(sets["push"], config)}
        timings = interleave({"finish_run": lambda: outs.append(end_of_run()),
                              "gallery": lambda: save_prototype_gallery(outs[-1], sets["push"]),
                              **{f"pass_{split}": (lambda split=split: predict(model, loaders[split], context))
                                 for split in PASSES_SAVED}},
                             1 if quick else 2, warmup=1)  # the warm-up also fills the decoded cache
    end_s, gallery_s = timings["finish_run"]["min_s"], timings["gallery"]["min_s"]
    saved_s = sum(count * timings[f"pass_{split}"]["min_s"] for split, count in PASSES_SAVED.items())
    return {
        "title": "End of a run: the prototype gallery moved out, one encoder pass per split (demo profile)",
        "shapes": {"demo": f"P={config.model.num_prototypes}, {len(sets['push'])} push videos, "
                           f"{len(sets['val'])} val + {len(sets['test'])} test videos (×{config.data.test_clips} clips)"},
        "measurements": timings,
        "ratios": [ratio("run end before ÷ after moving the gallery out (speed-up)", (end_s + gallery_s) / end_s, ">= 1.2",
                         note=f"run end {end_s:.1f} s + gallery {gallery_s:.1f} s before, {end_s:.1f} s now; "
                              f"min of {timings['gallery']['n']}"),
                   ratio("run end with a pass per evaluation ÷ one encoder pass per split (speed-up)",
                         (end_s + saved_s) / end_s, ">= 1.5",
                         note=f"{end_s:.1f} s now + {saved_s:.1f} s of passes no longer made ("
                              + ", ".join(f"{count} × {split} {timings[f'pass_{split}']['min_s']:.2f} s"
                                          for split, count in PASSES_SAVED.items())
                              + f"); min of {timings['finish_run']['n']}"),
                   ratio("prototype gallery, per run (s)", gallery_s, unit="s",
                         note=f"{config.model.num_prototypes} strips + GIFs + gallery.png; saved in each of the 15 sweep runs of notebooks 04 and 06")],
    }

