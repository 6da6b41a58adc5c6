"""The GPU check (item `gpu`, `python -m benchmarks --gpu`) and its parts: paper-shape step
variants, a paper-shape epoch, two-process DDP, and the paper run projected from them."""
from __future__ import annotations

import pathlib
import time
import warnings

from .common import ROOT, SEED, interleave, ratio, scratch, seed_everything

# ----------------------------------------------------------------------- 6: GPU
# EchoNet-Dynamic's split sizes: what the paper's 30 epochs, validation, push and test cost.
ECHONET_SPLITS = {"TRAIN": 7465, "VAL": 1288, "TEST": 1277}
GPU_TITLE = "GPU check (paper shape; python -m benchmarks --gpu)"
GPU_BATCH = 16


def gpu(quick: bool) -> dict:
    """6. The GPU check (`python -m benchmarks --gpu`, ≤ 8 min on one GPU): paper-shape steps
    fp32 vs bf16, ± channels_last_3d, ± torch.compile; a paper-shape epoch on synthetic 112²
    data (clips/s); the projected paper run; two-process DDP when ≥ 2 GPUs."""
    import torch

    if not torch.cuda.is_available():
        return {"title": GPU_TITLE, "skipped": "no CUDA", "ratios": []}
    from protoef.data import synthetic

    steps = gpu_compare(torch.device("cuda"), batch=GPU_BATCH, frames=64, size=112, reps=5 if quick else 10)
    with scratch("protoef-bench-gpu-") as tmp:
        root = synthetic.generate(tmp / "data", videos=64 if quick else 160, seed=SEED, progress=False)
        epoch = _gpu_epoch(root, tmp)
        ddp = _gpu_ddp(root, tmp, epoch) if torch.cuda.device_count() >= 2 else {"skipped": "fewer than 2 GPUs"}
    return gpu_report(steps, epoch, ddp, gpu_name=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count())


def paper_projection(train_clips_per_s: float, eval_clips_per_s: float, *, epochs: int = 30, test_clips: int = 10,
                     splits: dict = ECHONET_SPLITS) -> dict:
    """Seconds of the paper's run on EchoNet-Dynamic at the measured speeds: per epoch one
    random clip per TRAIN video and one per VAL video; then the push over TRAIN (one clip
    each) and the test before and after it (`test_clips` per TEST video) and a last VAL pass."""
    parts = {"train_s": epochs * splits["TRAIN"] / train_clips_per_s,
             "validate_s": (epochs + 2) * splits["VAL"] / eval_clips_per_s,
             "push_s": splits["TRAIN"] / eval_clips_per_s,
             "test_s": 2 * splits["TEST"] * test_clips / eval_clips_per_s}
    return {**parts, "total_h": sum(parts.values()) / 3600}


def gpu_report(steps: dict, epoch: dict, ddp: dict, *, gpu_name: str, gpus: int) -> dict:
    """The gpu item's result (JSON and table rows) from its measurements: `steps` from
    `gpu_compare`, `epoch` from `_gpu_epoch`, `ddp` from `_gpu_ddp` (or {"skipped": why})."""
    clips = {k: GPU_BATCH / v["min_s"] for k, v in steps.items() if "min_s" in v}
    failed = {k: v["error"] for k, v in steps.items() if "error" in v}
    ratios = [ratio(f"step {k} ÷ fp32 (speed-up)", clips[k] / clips["fp32"],
                    note=f"{clips[k]:.1f} vs {clips['fp32']:.1f} clips/s, batch {GPU_BATCH}, min of {steps[k]['n']}")
              for k in clips if k != "fp32" and "fp32" in clips]
    ratios += [ratio(f"step {k}: failed", float("nan"), note=error[:120]) for k, error in failed.items()]
    projection = paper_projection(epoch["train_clips_per_s"], epoch["eval_clips_per_s"])
    ratios += [
        ratio("paper-shape epoch on synthetic 112² data, run defaults (clips/s)", epoch["train_clips_per_s"], unit="/s",
              note=f"{epoch['videos']} videos, batch {GPU_BATCH}, {epoch['workers']} loader workers, amp={epoch['amp']}, "
                   f"channels_last={epoch['channels_last']}, second epoch (decoded cache warm); first {epoch['first_epoch_clips_per_s']:.1f}/s"),
        ratio("paper-shape evaluation (clips/s)", epoch["eval_clips_per_s"], unit="/s", note="forward only, one clip per video"),
        ratio("projected paper run: 30 epochs × 7,465 videos + val, push, test (h)", projection["total_h"], unit="h",
              note=f"train {projection['train_s'] / 3600:.2f} h, val {projection['validate_s'] / 60:.1f} min, push "
                   f"{projection['push_s'] / 60:.1f} min, test {projection['test_s'] / 60:.1f} min; on {gpu_name}"),
    ]
    if "skipped" in ddp:
        ratios.append(ratio("DDP 2 processes: skipped", float("nan"), note=ddp["skipped"]))
    else:
        ratios.append(ratio("DDP 2 processes ÷ 1 process, epoch clips/s (speed-up)", ddp["clips_per_s"] / epoch["train_clips_per_s"],
                            note=f"{ddp['clips_per_s']:.1f} vs {epoch['train_clips_per_s']:.1f} clips/s; torchrun run of "
                                 f"{ddp['wall_s']:.0f} s wrote one run directory"))
    return {"title": GPU_TITLE, "gpu": gpu_name, "gpus": gpus, "shape": f"{GPU_BATCH}×3×64×112×112, P=40, r2plus1d_18",
            "measurements": {"steps": steps, "clips_per_s": clips, "epoch": epoch, "ddp": ddp},
            "projection": projection, "fastest_step": max(clips, key=clips.get) if clips else None,
            "config_defaults_on_cuda": "amp=True (bf16), channels_last=True, compile=False (protoef/config.py)",
            "ratios": ratios}


def _paper_parts(root: pathlib.Path, tmp: pathlib.Path):
    """The paper profile's config, train/push sets and run context (CUDA defaults) on `root`."""
    import os

    from protoef.config import resolve
    from protoef.data import compute_mean_std
    from protoef.training.build import RunContext, feature_size, split_dataset

    config = resolve("paper", {"data.root": str(root), "data.cache_dir": str(tmp / "cache"), "model.weights": None,
                               "data.num_workers": min(8, os.cpu_count() or 1)})
    config.data.mean, config.data.std = compute_mean_std(root, resize=config.data.resize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = split_dataset(config, "TRAIN", clips="random", augment=True, with_masks=True,
                              feature_size=feature_size(config), background_dilation=config.data.background_dilation)
        push = split_dataset(config, "TRAIN", clips="deterministic")
    return config, train, push, RunContext(config)


def _gpu_epoch(root: pathlib.Path, tmp: pathlib.Path) -> dict:
    """Two paper-shape training epochs as `fit` runs them (loader workers, oversampling,
    masks, the CUDA defaults); the second is timed warm. Then one evaluation pass."""
    import torch

    from protoef.data import oversampling_sampler
    from protoef.training.build import build_loss, build_model, make_loader
    from protoef.training.loops import predict, train_epoch

    config, train, push, context = _paper_parts(root, tmp)
    seed_everything()
    model = build_model(config).to(context.device)
    if context.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-4), build_loss(config)
    seconds = []
    for epoch in range(2):
        sampler = oversampling_sampler(train.efs, threshold=config.data.oversample_threshold,
                                       generator=torch.Generator().manual_seed(epoch))
        torch.cuda.synchronize()
        start = time.perf_counter()
        train_epoch(model, make_loader(train, config, shuffle_seed=epoch, sampler=sampler), loss_fn, optimizer, context, desc="epoch")
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    predict(model, make_loader(push, config), context)
    torch.cuda.synchronize()
    evaluation = time.perf_counter() - start
    return {"videos": len(train), "workers": config.data.num_workers, "amp": context.amp, "channels_last": context.channels_last,
            "seconds": seconds, "train_clips_per_s": len(train) / seconds[1], "first_epoch_clips_per_s": len(train) / seconds[0],
            "eval_seconds": evaluation, "eval_clips_per_s": len(push) / evaluation,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def _gpu_ddp(root: pathlib.Path, tmp: pathlib.Path, single: dict) -> dict:
    """`torchrun --nproc_per_node 2 -m protoef train --profile paper` for 2 epochs on the
    synthetic set: it must write one run; epoch 2's clips/s against the 1-process epoch."""
    import os
    import subprocess
    import sys

    from protoef.training import runs

    out = tmp / "ddp"
    torchrun = pathlib.Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "-m", "protoef", "train", "--profile", "paper", "--data", str(root),
               "--out", str(out), "--set", "model.weights=none", "--set", "optim.epochs=2",
               "--set", f"data.cache_dir={tmp / 'cache'}", "--set", f"data.num_workers={single['workers'] // 2 or 1}"]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "OMP_NUM_THREADS": "4"})
    except subprocess.TimeoutExpired:
        return {"skipped": "torchrun did not finish within 300 s"}
    wall = time.perf_counter() - start
    run = runs.RunDir(out)
    if result.returncode != 0 or not run.finished:
        return {"skipped": f"torchrun failed (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}"}
    history = run.read_history()
    return {"wall_s": wall, "seconds_train": history["seconds_train"].tolist(),
            "clips_per_s": single["videos"] / history["seconds_train"].iloc[-1],
            "test_n": run.read_metrics()["test"]["post_push"]["n"]}


def gpu_compare(device, *, batch: int, frames: int, size: int, reps: int, backbone: str = "r2plus1d_18",
                compile_variant: bool = True) -> dict:
    """Interleaved training steps of ProtoEFNet in each precision/layout/compile variant.
    A variant that fails (out of memory in fp32 on a small GPU, no compiler) is reported
    with its error instead of stopping the others."""
    import torch

    from protoef.losses import ProtoEFLoss
    from protoef.model import ProtoEFNet

    configs = {"fp32": (False, False, False), "fp32+cl": (False, True, False), "bf16": (True, False, False),
               "bf16+cl": (True, True, False)}
    if compile_variant:
        configs["bf16+compile"] = (True, False, True)
        configs["bf16+cl+compile"] = (True, True, True)
    seed_everything()
    video = torch.randn(batch, 3, frames, size, size, device=device)
    targets = torch.rand(batch, device=device) * 80 + 10
    background = torch.rand(batch, 1, 1, size // 8, size // 8, device=device)
    loss_fn = ProtoEFLoss()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps, failed = {}, {}
    for name, (amp, channels_last, compiled) in configs.items():
        model = ProtoEFNet(backbone=backbone).to(device)
        x = video
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
            x = video.contiguous(memory_format=torch.channels_last_3d)
        trained = torch.compile(model) if compiled else model
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model=model, trained=trained, optimizer=optimizer, x=x, amp=amp):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = trained(x)
            out = out.float()
            loss, _ = loss_fn(out, targets, model, background=background)
            loss.backward()
            optimizer.step()
            sync()
        try:
            step()  # compiles, and shows an out-of-memory before the timed rounds
            steps[name] = step
        except Exception as error:  # noqa: BLE001 - one variant's failure is a result, not a crash
            failed[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
            del model, trained, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {**interleave(steps, reps, warmup=2), **failed}

